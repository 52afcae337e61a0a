"""Fixed, log-spaced histogram buckets for durations (seconds): every roll-up item counts into the same buckets, so
items add up, and a quantile read from them is within its bucket of the true one.

Bucket 0 holds everything under `BASE_S`; bucket i >= 1 holds [BASE_S * RATIO**(i-1), BASE_S * RATIO**i); the last
one everything from its lower edge up. RATIO 2**(1/4): a quantile is known to within 19 %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

BASE_S = 0.1
RATIO = 2 ** 0.25
# 0.1 s * 2**20 is over a day: longer than any task may live (`task_deadline_s`).
BUCKETS = 82


def bucket_of(seconds: float) -> int:
    if seconds < BASE_S:
        return 0
    index = 1 + math.floor(math.log(seconds / BASE_S, RATIO))
    # Float rounding at an edge: the bucket is the one whose range holds the value.
    if index > 1 and seconds < lower_edge(index):
        index -= 1
    elif seconds >= lower_edge(index + 1):
        index += 1
    return min(index, BUCKETS - 1)


def lower_edge(index: int) -> float:
    return 0.0 if index == 0 else BASE_S * RATIO ** (index - 1)


def representative(index: int) -> float:
    """The value a quantile falling in bucket `index` is shown as: the bucket's geometric middle."""
    if index == 0:
        return BASE_S / 2
    return lower_edge(index) * RATIO ** 0.5


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The `q` quantile (nearest rank) of what `counts` (bucket -> count) holds, None when it holds nothing."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return round(representative(index), 3)
    return round(representative(max(counts)), 3)  # pragma: no cover - the ranks add up to the total
