"""Daily request quotas per model (and optionally per user), counted in DynamoDB.

A request is consumed inside the transaction that creates its task (`consume`: one conditional increment per
counter, `used < limit`, so parallel requests never pass a limit), and given back once inside the transition that
ends a task before any Ark call (`give_back`, by `chalicelib.store.statemachine`). Counters are named per model and
day in the quota timezone, and per user, model and day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from chalicelib.store.records import ModelRecord, QuotaRecord

# Counters outlive their day by a margin so yesterday's usage stays readable for a while.
COUNTER_RETENTION_S = 3 * 24 * 3600


def quota_day(epoch: float, timezone: str) -> str:
    return datetime.fromtimestamp(epoch, tz=ZoneInfo(timezone)).strftime("%Y-%m-%d")


def model_counter_key(model_id: str, day: str) -> str:
    return f"model#{model_id}#{day}"


def user_counter_key(user_id: str, model_id: str, day: str) -> str:
    """A user's counter is the account's (its user id), so a new account with a deleted one's name starts afresh."""
    return f"user#{user_id}#{model_id}#{day}"


@dataclass(frozen=True)
class Counter:
    key: str
    limit: int


def counters(model: ModelRecord, user_id: str, now: float, timezone: str) -> list[Counter]:
    """The counters a request for `model` by `user_id` at `now` takes from: the model's, and the user's when the
    model sets a per-user quota."""
    day = quota_day(now, timezone)
    found = [Counter(model_counter_key(model.model_id, day), int(model.daily_quota))]
    if model.user_daily_quota is not None:
        found.append(Counter(user_counter_key(user_id, model.model_id, day), int(model.user_daily_quota)))
    return found


def used(counter_key: str) -> int:
    try:
        return int(QuotaRecord.get(counter_key, consistent_read=True).used)
    except DoesNotExist:
        return 0


def consume(transaction: TransactWrite, taken: Sequence[Counter], now: float) -> None:
    """Take one request from each counter within its limit, in `transaction` (which fails if any is used up)."""
    counter_expiry = int(now) + COUNTER_RETENTION_S
    for counter in taken:
        transaction.update(
            QuotaRecord(counter.key),
            actions=[QuotaRecord.used.add(1), QuotaRecord.expires_at_epoch.set(counter_expiry)],
            condition=_below(counter.limit),
        )


def give_back(transaction: TransactWrite, counter_keys: Sequence[str]) -> None:
    """Return one request to each counter, in `transaction`."""
    for key in counter_keys:
        transaction.update(QuotaRecord(key), actions=[QuotaRecord.used.add(-1)])


def _below(limit: int) -> Condition:
    """A counter may take one more request: a missing counter has used nothing, which only a zero quota refuses."""
    if limit <= 0:
        return QuotaRecord.used < 0  # never true: the transaction fails as "quota exceeded"
    return QuotaRecord.used.does_not_exist() | (QuotaRecord.used < limit)
