"""Child processes (each in its own process group, stopped and reaped) and server threads of the local stack."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1
_POLL_INTERVAL_S = 0.05


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies without a chance to clean up."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ChildProcess:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def has_exited(self) -> bool:
        """Without reaping: the exited leader keeps its process group id reserved until `stop` reaps it."""
        if self.popen.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def stop(self, grace_s: float = 5.0) -> int:
        """SIGTERM the whole group, SIGKILL what is left after `grace_s` (stragglers too), then reap."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while not self.has_exited() and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL_S)
        # The leader is at most a zombie here, so its group id cannot have been reused.
        self._signal_group(signal.SIGKILL)
        return self.popen.wait()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def spawn(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> ChildProcess:
    """Start `argv` from the repository root with no stdin, sharing the stack's stdout/stderr.

    Its own session keeps a terminal's Ctrl-C away from it, so the stack stops children in order.
    """
    popen = subprocess.Popen(
        list(argv),
        cwd=REPO_ROOT,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    return ChildProcess(name, popen)


def wait_until_answers(
    url: str,
    child: ChildProcess | None,
    timeout_s: float,
    is_ready: Callable[[httpx.Response], bool] = lambda response: True,
) -> None:
    """Poll `url` until `is_ready(response)`; fail early if `child` exits, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    last_problem = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while True:
            if child is not None and child.has_exited():
                raise RuntimeError(f"{child.name} exited before answering at {url}")
            try:
                response = client.get(url)
                if is_ready(response):
                    return
                last_problem = f"HTTP {response.status_code}"
            except httpx.TransportError as error:
                last_problem = repr(error)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s ({last_problem})")
            time.sleep(0.1)


@contextmanager
def serving_in_thread(server: socketserver.BaseServer, name: str) -> Iterator[threading.Thread]:
    """Run a bound server's `serve_forever` in a thread until the block exits, then close its socket."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
