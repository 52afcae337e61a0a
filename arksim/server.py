"""Running the simulator: in the foreground (`python -m arksim`) or on a background thread (tests, local stack)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from arksim.app import create_app
from arksim.clock import SimClock
from arksim.config import SimConfig
from arksim.simulator import Simulator

STARTUP_TIMEOUT_S = 10.0


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen first: the real port is known (port 0 picks a free one) and connections made before the
    server runs wait in the backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(socket.SOMAXCONN)
    return sock


def base_url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def make_server(sim: Simulator) -> uvicorn.Server:
    # A short graceful-shutdown window: hung "timeout" faults must not hold a stop for minutes.
    return uvicorn.Server(uvicorn.Config(create_app(sim), log_level="warning", access_log=False,
                                         timeout_graceful_shutdown=1))


class RunningSimulator:
    """A simulator serving on a background thread; admin calls go over HTTP, as any other process would."""

    def __init__(self, sim: Simulator, server: uvicorn.Server, thread: threading.Thread, root_url: str) -> None:
        self.sim = sim
        self.clock = sim.clock
        self.root_url = root_url
        self.base_url = f"{root_url}/api/v3"
        self.admin_url = f"{root_url}/_sim"
        self._server = server
        self._thread = thread

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.admin_url}{path}", timeout=10.0, **kwargs)
        response.raise_for_status()
        return response.json()

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self._admin("PUT", "/config", json=changes)

    def config(self) -> dict[str, Any]:
        return self._admin("GET", "/config")

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "/stats")

    def completions(self) -> list[dict[str, Any]]:
        """Each generation done, stamped on the simulator's wall clock (`GET /_sim/completions`)."""
        return list(self._admin("GET", "/completions")["completions"])

    def reset(self, everything: bool = False) -> None:
        self._admin("POST", "/reset", params={"everything": "true" if everything else "false"})

    def advance(self, seconds: float) -> float:
        """Move the simulator's clock forward and apply every task transition that became due."""
        return self._admin("POST", "/clock", json={"advance_s": seconds})["now"]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


def start_in_thread(config: SimConfig | None = None, clock: SimClock | None = None, host: str = "127.0.0.1",
                    port: int = 0) -> RunningSimulator:
    sim = Simulator(config or SimConfig.from_env(), clock)
    sock = bind(host, port)
    server = make_server(sim)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="arksim", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the Ark simulator did not start")
        time.sleep(0.01)
    return RunningSimulator(sim, server, thread, base_url_of(sock))
