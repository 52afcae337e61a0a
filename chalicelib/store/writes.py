"""How arkflow writes to DynamoDB: transactions that run again after a conflict, and how a failed write is read.

Only a false condition means another writer got there first (`condition_failed`); anything else (throttling, an
internal error, a transaction conflict) is an error that says nothing about the item, to be retried, never taken as
a lost race.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import botocore.session
from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import aws
from chalicelib.backoff import compute_backoff
from chalicelib.settings import get_settings

CONDITION_FAILED = "ConditionalCheckFailedException"
# Cancellation reasons that mean "another request was writing the item at that moment": nothing was written and
# no condition was judged false, so the same transaction may simply run again.
_RETRYABLE_CANCELLATIONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
TRANSACTION_ATTEMPTS = 5
TRANSACTION_BACKOFF_S = 0.025


class _ContainerConnection(Connection):
    """pynamodb's connection with its client made from the container's botocore session (`aws.botocore_session`),
    not from a session of its own (pynamodb makes one per connection, and one per thread)."""

    @property
    def session(self) -> botocore.session.Session:
        return aws.botocore_session()

    @property
    def client(self) -> Any:
        with aws.making_clients:
            return super().client


_connection: Connection | None = None


def forget_connection() -> None:
    """Drop the container's DynamoDB connection (the endpoint, region or credentials may have changed)."""
    global _connection
    _connection = None


def connection() -> Connection:
    """The container's DynamoDB connection: transactions go through it, and every record's table connection sends
    through its client (`records._Base`), so a container makes one DynamoDB client, not one per table it uses.
    Its settings are pynamodb's defaults, as every record's are."""
    global _connection
    if _connection is None:
        _connection = _ContainerConnection(region=get_settings().region)
    return _connection


def transaction() -> TransactWrite:
    """A DynamoDB transaction over arkflow's tables (pynamodb sends condition checks, puts, then updates)."""
    return TransactWrite(connection=connection())


def condition_failed(error: PynamoDBException) -> bool:
    """Whether DynamoDB refused the write because one of its conditions was false: the one failure that means
    "the item is not as the writer read it". A transaction counts when any of its items failed its condition."""
    code = error.cause_response_code
    if code == CONDITION_FAILED:
        return True
    return code == "TransactionCanceledException" and isinstance(error, TransactWriteError) and any(
        reason is not None and reason.code == "ConditionalCheckFailed" for reason in error.cancellation_reasons)


def transaction_conflicted(error: TransactWriteError) -> bool:
    """A transaction cancelled only because another request was writing one of its items at once. Real DynamoDB
    does this to concurrent transactions on one item (moto never does), and botocore does not retry it."""
    if error.cause_response_code != "TransactionCanceledException":
        return False
    return only_conflicts([reason.code for reason in error.cancellation_reasons if reason is not None])


def only_conflicts(codes: Iterable[str | None]) -> bool:
    """Whether a cancelled transaction's reason codes (one per item; "None" for an item that was fine) say only
    that it met another write or was throttled: it wrote nothing, and the same transaction may simply run again."""
    failed = {code for code in codes if code not in (None, "None")}
    return bool(failed) and failed <= _RETRYABLE_CANCELLATIONS


def is_write_conflict(error: Exception) -> bool:
    """A single-item write refused because a transaction was writing the same item at that moment."""
    if isinstance(error, PynamoDBException):
        code = error.cause_response_code
    else:
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
    return code == "TransactionConflictException"


def pause_before_retry(attempt: int, sleep: Callable[[float], None] = time.sleep) -> None:
    """A jittered pause that grows with each attempt (full jitter: retries of racing writers spread out)."""
    sleep(compute_backoff(attempt, base=TRANSACTION_BACKOFF_S, spread=(0.0, 1.0)))


def write_transaction(build: Callable[[TransactWrite], None], *, attempts: int = TRANSACTION_ATTEMPTS) -> None:
    """Run the transaction `build` fills in; one cancelled by a conflict runs again after a jittered,
    growing pause (it wrote nothing, and its conditions are judged afresh). The last conflict, and every other
    failure, is raised."""
    for attempt in range(attempts):
        try:
            with transaction() as writes:
                build(writes)
            return
        except TransactWriteError as error:
            if attempt == attempts - 1 or not transaction_conflicted(error):
                raise
        pause_before_retry(attempt)
