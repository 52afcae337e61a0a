"""A clock tests set and advance by hand (`chalicelib.clock.Clock`)."""

from __future__ import annotations

import time

from chalicelib.clock import Clock


class FrozenClock(Clock):
    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
