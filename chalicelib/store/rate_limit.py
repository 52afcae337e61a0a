"""The per-user task creation rate limit (`POST /api/tasks` and renders, with a session or a key alike).

Each user has a counter per minute window (fixed windows on the epoch's minutes, from the injected clock), taken
by one conditional increment (`used < limit`, as `chalicelib.store.quota` takes a daily quota), so parallel
requests can never pass the limit; the counter item expires after its window (TTL). A creation is counted before
anything of its task is stored, once its body is valid; a replay of an `Idempotency-Key` already answered is not
counted again. The limit is the user's `requests_per_minute`, set by admins; docs/api.md, "Rate limit".
"""

from __future__ import annotations

import math

from pynamodb.exceptions import UpdateError

from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.errors import TooManyRequests
from chalicelib.store.records import RateLimitRecord
from chalicelib.store.writes import condition_failed

DEFAULT_REQUESTS_PER_MINUTE = 60
WINDOW_S = 60
# A window's counter is never read after the window; the TTL only keeps the table small.
COUNTER_RETENTION_S = 5 * 60


def counter_key(user_id: str, window: int) -> str:
    """The counter of `user_id`'s account (never its name) for the minute window `window` (epoch minutes)."""
    return f"{user_id}#{window}"


class RateLimited(TooManyRequests):
    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"At most {limit} tasks may be created per minute; try again in {retry_after_s} s.",
            code="rate_limited",
            details={"requests_per_minute": limit, "retry_after_seconds": retry_after_s},
            headers={"Retry-After": str(retry_after_s)},
        )


class CreationRateLimit:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock

    def take(self, user_id: str, requests_per_minute: int | None) -> None:
        """Count one creation in the current window; `RateLimited` (counting nothing) when the window is full."""
        limit = requests_per_minute or DEFAULT_REQUESTS_PER_MINUTE
        now = self.clock.now()
        window = int(now // WINDOW_S)
        window_end = (window + 1) * WINDOW_S
        try:
            RateLimitRecord(counter_key(user_id, window)).update(
                actions=[RateLimitRecord.used.add(1),
                         RateLimitRecord.expires_at_epoch.set(window_end + COUNTER_RETENTION_S)],
                condition=RateLimitRecord.used.does_not_exist() | (RateLimitRecord.used < limit),
            )
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            raise RateLimited(limit, max(1, math.ceil(window_end - now))) from exc
