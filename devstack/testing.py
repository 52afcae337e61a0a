"""Run the real local stack (`python -m devstack`) as a subprocess, for end-to-end tests.

    with launch_local_stack(tmp_path / "stack.log") as stack:
        httpx.post(stack.api_url + "/api/users/login", json={...})

`tests/stack/conftest.py` wraps this in the `local_stack` fixture.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.config import Credentials, StackConfig
from devstack.processes import REPO_ROOT, ChildProcess, wait_until_answers
from devstack.stack import HEALTH_PATH

BANNER_END = "Press Ctrl-C to stop."


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (the OS picks it; another process could still take it before we bind)."""
    with socket.create_server((host, 0)) as probe:
        return int(probe.getsockname()[1])


@dataclass
class LocalStack:
    config: StackConfig
    process: subprocess.Popen[bytes]
    output_path: Path

    @property
    def moto_url(self) -> str:
        return self.config.moto_url or f"http://{self.config.host}:{self.config.moto_port}"

    @property
    def api_url(self) -> str:
        return self.config.api_url

    @property
    def ws_url(self) -> str:
        return self.config.ws_url

    @property
    def web_url(self) -> str:
        return self.config.web_url

    @property
    def sim_url(self) -> str:
        """The simulator's root (admin API under `/_sim`); Ark's API is at `ark_base_url`."""
        return self.config.sim_url

    @property
    def ark_base_url(self) -> str:
        return self.config.ark_base_url

    @property
    def admin(self) -> Credentials:
        return self.config.admin

    @property
    def demo(self) -> Credentials:
        return self.config.demo

    @contextmanager
    def simulator_config(self, **changes: Any) -> Iterator[None]:
        """Change the simulator's configuration for the block, then put back what it was."""
        before = httpx.get(f"{self.sim_url}/_sim/config").json()
        httpx.put(f"{self.sim_url}/_sim/config", json=changes).raise_for_status()
        try:
            yield
        finally:
            httpx.put(f"{self.sim_url}/_sim/config", json={name: before[name] for name in changes}).raise_for_status()

    def list_tasks(self, headers: Mapping[str, str], path: str = "/api/admin/tasks", **params: Any) -> list[dict]:
        """Every task of a listing, following its cursors (a page may hold fewer than `limit`, even none)."""
        tasks: list[dict] = []
        query: dict[str, Any] = {"limit": 100, **params}
        while True:
            response = httpx.get(f"{self.api_url}{path}", headers=dict(headers), params=query, timeout=60.0)
            response.raise_for_status()
            tasks += response.json()["tasks"]
            if not response.json()["next_cursor"]:
                return tasks
            query["cursor"] = response.json()["next_cursor"]

    def output(self) -> str:
        """Everything the stack printed so far (stdout and stderr)."""
        return self.output_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Signal the stack and wait for it to exit; SIGKILL its group and fail if it does not."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(f"the stack ignored {signal.Signals(signum).name} for {timeout_s} s") from None
        return self.process.returncode


def stack_environment(config: StackConfig, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment, minus anything that would point the stack elsewhere, plus `config`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_ENDPOINT_URL") and name != "ARK_API_KEY"
    }
    env.update(
        ARKFLOW_HOST=config.host,
        ARKFLOW_API_PORT=str(config.api_port),
        ARKFLOW_WS_PORT=str(config.ws_port),
        ARKFLOW_WEB_PORT=str(config.web_port),
        ARKSIM_HOST=config.sim_host,
        ARKSIM_PORT=str(config.sim_port),
        MOTO_PORT=str(config.moto_port),
        ARKFLOW_PREFIX=config.prefix,
        ADMIN_USERNAME=config.admin.username,
        ADMIN_PASSWORD=config.admin.password,
        DEMO_USERNAME=config.demo.username,
        DEMO_PASSWORD=config.demo.password,
    )
    if config.moto_url:
        env["ARKFLOW_MOTO_URL"] = config.moto_url
    env.update(extra_env or {})
    return env


def free_stack_config(host: str = "127.0.0.1") -> StackConfig:
    """Free ports and a unique resource prefix."""
    return StackConfig(
        host=host,
        api_port=free_port(host),
        ws_port=free_port(host),
        web_port=free_port(host),
        sim_host=host,
        sim_port=free_port(host),
        moto_port=free_port(host),
        prefix=f"arkflow-e2e-{uuid.uuid4().hex[:8]}",
    )


# Free ports are picked before the stack's servers bind them: another process (a parallel test's stack) may take
# one in between. A stack on ports picked here starts again on fresh ones; one on the caller's ports does not.
PORT_TAKEN = "Address already in use"
PORT_RETRIES = 3


@contextmanager
def launch_local_stack(
    output_path: Path,
    extra_env: Mapping[str, str] | None = None,
    config: StackConfig | None = None,
) -> Iterator[LocalStack]:
    """Start the stack (by default on free ports with a unique resource prefix); yield once it printed its banner.

    Launching again with the same `config` (whose `moto_url` names a moto server started by the caller) restarts
    the app and its workers over the same ports, tables and queues.
    """
    attempts = 1 if config else PORT_RETRIES
    for attempt in range(1, attempts + 1):
        stack = _start(config or free_stack_config(), output_path, extra_env)
        try:
            _wait_until_ready(stack, stack.config.startup_timeout_s)
        except AssertionError:
            stack.stop()
            if attempt == attempts or PORT_TAKEN not in stack.output():
                raise
            continue
        try:
            yield stack
        finally:
            stack.stop()
        return


def _start(config: StackConfig, output_path: Path, extra_env: Mapping[str, str] | None) -> LocalStack:
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=REPO_ROOT,
            env=stack_environment(config, extra_env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no controlling terminal, like CI
        )
    return LocalStack(config, process, output_path)


def _wait_until_ready(stack: LocalStack, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    try:
        wait_until_answers(
            stack.api_url + HEALTH_PATH,
            ChildProcess("the local stack", stack.process),
            timeout_s,
            lambda response: response.status_code == 200,
        )
        while BANNER_END not in stack.output():
            if stack.process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError("the stack answered but printed no banner")
            time.sleep(0.05)
    except (TimeoutError, RuntimeError) as error:
        raise AssertionError(f"local stack did not start: {error}\n--- output ---\n{stack.output()}") from error
