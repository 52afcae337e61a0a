"""For tests: `with running_simulator(image_latency_s=0) as ark: VolcImageClient(ark.base_url, "key")`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from arksim.clock import SimClock
from arksim.config import SimConfig
from arksim.server import RunningSimulator, start_in_thread


@contextmanager
def running_simulator(clock: SimClock | None = None, **config: Any) -> Iterator[RunningSimulator]:
    """A simulator on a free port of 127.0.0.1 with `config` (SimConfig fields; the environment is ignored)."""
    running = start_in_thread(SimConfig(**config), clock)
    try:
        yield running
    finally:
        running.stop()
