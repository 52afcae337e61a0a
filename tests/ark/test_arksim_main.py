"""`python -m arksim` (what `make sim` runs): prints its base URL, serves Ark's API, stops cleanly on signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import IMAGE_MODEL, auth

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serves_on_the_configured_port_and_stops_on_signals(stop_signal):
    env = {**os.environ, "ARKSIM_HOST": "127.0.0.1", "ARKSIM_PORT": "0", "ARKSIM_IMAGE_LATENCY_S": "0"}
    process = subprocess.Popen([sys.executable, "-m", "arksim"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/api/v3)", banner)
        assert match, banner
        response = httpx.post(f"{match[1]}/images/generations", json={"model": IMAGE_MODEL, "prompt": "a cat"},
                              headers=auth(), timeout=30)
        assert response.status_code == 200
        assert response.json()["data"][0]["url"].startswith(match[1].removesuffix("/api/v3"))
        process.send_signal(stop_signal)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
