"""What a refused write of a task means: a lost race (`StaleTask`), a failure to retry (`WriteFailed`), or a change
the state machine forbids (`IllegalTransition`)."""

from __future__ import annotations

import logging

from pynamodb.exceptions import PynamoDBException

from chalicelib.errors import Conflict, Unavailable
from chalicelib.store import writes

log = logging.getLogger(__name__)


class IllegalTransition(Conflict):
    code = "illegal_transition"


class StaleTask(Conflict):
    """The task changed since it was read; re-read it and decide again."""

    code = "task_changed"


class WriteFailed(Unavailable):
    """DynamoDB did not take the write for a reason other than its condition (throttling, an internal error, a
    transaction conflict that outlived its retries): nothing is known to have changed; try again."""


def write_error(error: PynamoDBException, stale_message: str = "The task changed while this change was being "
                "applied.") -> StaleTask | WriteFailed:
    """What a failed conditional write of a task means: StaleTask only when its condition was false."""
    if writes.condition_failed(error):
        return StaleTask(stale_message)
    log.warning("write refused by DynamoDB (%s): %s", error.cause_response_code, error)
    return WriteFailed("The change could not be saved; try again.", headers={"Retry-After": "1"})
