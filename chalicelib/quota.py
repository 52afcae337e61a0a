"""Daily request quotas per model (and optionally per user), counted in DynamoDB.

Consumption happens inside the task-creation transaction (`tasks.create_task`) and a request goes back inside
the transition that ends a task before any Ark call (`statemachine.transition`); this module names and reads the
counters.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from pynamodb.exceptions import DoesNotExist

from chalicelib.db import QuotaRecord

# Counters outlive their day by a margin so yesterday's usage stays readable for a while.
COUNTER_RETENTION_S = 3 * 24 * 3600


def quota_day(epoch: float, timezone: str) -> str:
    return datetime.fromtimestamp(epoch, tz=ZoneInfo(timezone)).strftime("%Y-%m-%d")


def model_counter_key(model_id: str, day: str) -> str:
    return f"model#{model_id}#{day}"


def user_counter_key(user_id: str, model_id: str, day: str) -> str:
    """A user's counter is the account's (its user id), so a new account with a deleted one's name starts afresh."""
    return f"user#{user_id}#{model_id}#{day}"


def used(counter_key: str) -> int:
    try:
        return int(QuotaRecord.get(counter_key, consistent_read=True).used)
    except DoesNotExist:
        return 0

