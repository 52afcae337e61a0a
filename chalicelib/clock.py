"""Time in one place, so tests can move it instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    def now(self) -> float:
        """Epoch seconds."""
        return time.time()


class FrozenClock(Clock):
    """A clock tests set and advance by hand."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


SYSTEM_CLOCK = Clock()


def iso(epoch: float) -> str:
    """ISO 8601 UTC with millisecond precision and a `Z`, the API's time format."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"
