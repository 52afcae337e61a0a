"""The simulator's notion of "now", which tests can move forward instead of sleeping through hours."""

from __future__ import annotations

import threading
import time


class SimClock:
    """Unix time in seconds: real time plus an offset, or a frozen instant that moves only when advanced.

    Task timestamps, video progress, result-URL expiry and rate-limit windows all read this clock, so a test can
    jump past Ark's 24 h URL lifetime or 1 h execution expiry with `advance`.
    """

    def __init__(self, frozen_at: float | None = None) -> None:
        self._frozen_at = frozen_at
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def now(self) -> float:
        base = self._frozen_at if self._frozen_at is not None else time.time()
        return base + self._offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
        return self.now()
