"""Fixtures for the Ark clients and simulator: simulators on free ports, a callback receiver, tiny images."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from arksim.clock import SimClock
from arksim.server import RunningSimulator
from arksim.testing import running_simulator

API_KEY = "sk-test-0123456789abcdef"
IMAGE_MODEL = "doubao-seedream-4-5-251128"
VIDEO_MODEL = "doubao-seedance-1-0-pro-250528"
# Fast timings for tests; individual tests override what they exercise.
FAST = {"image_latency_s": 0.0, "video_queue_s": 0.0, "video_run_s": 0.2, "callback_retry_delay_s": 0.05}
START = 1_800_000_000.0


def data_uri(width: int, height: int, fmt: str = "png", mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format=fmt.upper())
    return f"data:image/{fmt};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def ark() -> Iterator[RunningSimulator]:
    """A fresh simulator on the real clock with fast timings."""
    with running_simulator(**FAST) as running:
        yield running


@pytest.fixture
def frozen_ark() -> Iterator[RunningSimulator]:
    """A simulator whose clock moves only through `advance` (video states and expiry step deterministically)."""
    with running_simulator(clock=SimClock(frozen_at=START), image_latency_s=0.0, video_queue_s=10.0,
                           video_run_s=60.0) as running:
        yield running


class CallbackReceiver:
    """Records every POST; answers 500 to the first `fail_first` requests and waits `delay_s` before answering."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = 0
        self.delay_s = 0.0
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.attempts += 1
                failing = receiver.attempts <= receiver.fail_first
                time.sleep(receiver.delay_s)
                if not failing:
                    receiver.received.append(body)
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def statuses(self) -> list[str]:
        return [body["status"] for body in self.received]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()
