"""Time in one place, so tests can move it instead of sleeping, and the API's one time format."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    def now(self) -> float:
        """Epoch seconds."""
        return time.time()


SYSTEM_CLOCK = Clock()


def iso(epoch: float) -> str:
    """ISO 8601 UTC with millisecond precision and a `Z`, the API's time format."""
    # From whole milliseconds: `fromtimestamp` rounds to the microsecond, so 0.9999998 past a second was the next
    # second with the milliseconds truncated to 999 (a second ahead).
    seconds, millis = divmod(int(epoch * 1000), 1000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"


def epoch_of(iso_time: str) -> float:
    """Epoch seconds of one of the API's ISO 8601 times."""
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
