"""How long to wait before trying again: the one backoff formula every retry, recheck and poll of arkflow uses."""

from __future__ import annotations

import math
import random


def compute_backoff(attempt: int, *, base: float, cap: float = math.inf, max_exponent: int = 32,
                    spread: tuple[float, float] = (1.0, 1.0), rng: random.Random | None = None) -> float:
    """`base` doubled for each attempt after the first (`attempt` counts from 0, doubling at most `max_exponent`
    times), at most `cap`, then scaled by a factor drawn uniformly from `spread`: `(1, 1)` no jitter, `(0.5, 1)`
    half of it jittered, `(0, 1)` full jitter (racing writers spread out most), `(1, 2)` up to twice as long."""
    delay = min(base * 2 ** min(max(attempt, 0), max_exponent), cap)
    low, high = spread
    if low == high:
        return delay * low
    return delay * (rng or random).uniform(low, high)
