"""What the simulator counts (for tests and benchmarks) and the sliding windows behind its per-minute limits."""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MAX_COMPLETIONS = 10_000


class SlidingWindow:
    """Units taken per key over the last `span_s` seconds of the simulator's clock."""

    def __init__(self, span_s: float = 60.0) -> None:
        self.span_s = span_s
        self._taken: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def try_take(self, key: str, units: int, limit: int, now: float) -> bool:
        entries = self._taken[key]
        while entries and entries[0][0] <= now - self.span_s:
            entries.popleft()
        if sum(count for _, count in entries) + units > limit:
            return False
        entries.append((now, units))
        return True

    def clear(self) -> None:
        self._taken.clear()


class Stats:
    """Counters readable at `GET /_sim/stats` and cleared by `POST /_sim/reset`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)  # endpoint -> model -> calls
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)  # endpoint -> HTTP status -> calls
        self.in_flight: Counter[str] = Counter()  # model -> generation requests being served now
        self.max_in_flight: Counter[str] = Counter()
        self.max_running: Counter[str] = Counter()  # model -> most video tasks `running` at once
        self.images_generated: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.callbacks: Counter[str] = Counter()  # attempts / delivered / failed_attempts / given_up
        # When each generation was done, on the simulator's wall clock (`GET /_sim/completions`): the moment a
        # client could first learn of it, so a delay measured from it is never negative.
        self.completions: deque[dict[str, Any]] = deque(maxlen=MAX_COMPLETIONS)

    def record_call(self, endpoint: str, model: str, status: int) -> None:
        self.calls[endpoint][model] += 1
        self.statuses[endpoint][str(status)] += 1

    @contextmanager
    def serving(self, model: str) -> Iterator[None]:
        self.in_flight[model] += 1
        self.max_in_flight[model] = max(self.max_in_flight[model], self.in_flight[model])
        try:
            yield
        finally:
            self.in_flight[model] -= 1

    def record_completion(self, kind: str, model: str, ark_id: str) -> None:
        """A generation done: an image answer about to be sent, a video task turning `succeeded`."""
        self.completions.append({"kind": kind, "model": model, "id": ark_id, "completed_at": time.time()})

    def observe_running(self, model: str, running: int) -> None:
        self.max_running[model] = max(self.max_running[model], running)

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": {endpoint: dict(models) for endpoint, models in self.calls.items()},
            "statuses": {endpoint: dict(codes) for endpoint, codes in self.statuses.items()},
            "in_flight": {model: count for model, count in self.in_flight.items() if count},
            "max_in_flight": dict(self.max_in_flight),
            "max_running": dict(self.max_running),
            "images_generated": dict(self.images_generated),
            "faults": dict(self.faults),
            "callbacks": dict(self.callbacks),
        }
