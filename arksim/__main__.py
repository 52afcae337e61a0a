"""`python -m arksim` (`make sim`): serve the Ark simulator on ARKSIM_HOST:ARKSIM_PORT until SIGINT/SIGTERM."""

from __future__ import annotations

import os

from arksim.config import SimConfig
from arksim.server import base_url_of, bind, make_server
from arksim.simulator import Simulator


def main() -> None:
    sim = Simulator(SimConfig.from_env())
    sock = bind(os.environ.get("ARKSIM_HOST", "127.0.0.1"), int(os.environ.get("ARKSIM_PORT", "9000")))
    root = base_url_of(sock)
    print(f"Ark simulator: {root}/api/v3 (admin {root}/_sim)", flush=True)
    # uvicorn handles SIGINT/SIGTERM itself: it stops accepting, finishes requests, then returns.
    make_server(sim).run(sockets=[sock])


if __name__ == "__main__":
    main()
