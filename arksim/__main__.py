"""`python -m arksim` (`make sim`): serve the Ark simulator on ARKSIM_HOST:ARKSIM_PORT until SIGINT/SIGTERM."""

from __future__ import annotations

import os
import signal
from types import FrameType

from arksim.config import SimConfig
from arksim.server import base_url_of, bind, make_server
from arksim.simulator import Simulator


def main() -> None:
    sim = Simulator(SimConfig.from_env())
    sock = bind(os.environ.get("ARKSIM_HOST", "127.0.0.1"), int(os.environ.get("ARKSIM_PORT", "9000")))
    server = make_server(sim)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    # uvicorn handles SIGINT/SIGTERM while serving (stop accepting, finish requests) and then re-raises the
    # signal to the handler it found: this one, so a signal before start-up or after shutdown also ends in exit 0.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    root = base_url_of(sock)
    print(f"Ark simulator: {root}/api/v3 (admin {root}/_sim)", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
