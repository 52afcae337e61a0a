"""The README's backend session, run as it is printed against the local stack (so it cannot drift from the API)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from devstack.processes import REPO_ROOT
from devstack.testing import LocalStack

pytestmark = pytest.mark.stack


def readme_session() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("### From a backend, end to end"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's backend session has no python block"
    return match.group(1)


def test_the_readmes_backend_session_runs_against_the_local_stack(local_stack: LocalStack) -> None:
    session = readme_session().replace('"username": "demo", "password": "demo-pass"',
                                       f'"username": "{local_stack.demo.username}", '
                                       f'"password": "{local_stack.demo.password}"')
    result = subprocess.run([sys.executable, "-c", session], env={**os.environ, "ARKFLOW_API": local_stack.api_url},
                            capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr
    queued, succeeded = result.stdout.splitlines()[-2:]
    task_id = queued.removeprefix("queued ")
    assert task_id.startswith("tsk_")
    assert succeeded.startswith("task.succeeded msg_"), succeeded
    assert "http" in succeeded  # the result's links, fresh in the delivery
