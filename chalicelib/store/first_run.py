"""What a deployment does once and never again, even after what it made is deleted: a marker record per thing,
written in the same transaction as the thing itself, so a crash leaves both or neither.

The first admin is created once per deployment, and a default model once per model id: a later release's new
default reaches existing deployments, and a default an admin deleted stays deleted.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.models import Model

from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.store import writes
from chalicelib.store.records import MarkerRecord


def marked(marker_ids: list[str]) -> set[str]:
    """Those of `marker_ids` this deployment has already marked."""
    return {record.marker_id for record in MarkerRecord.batch_get(marker_ids, consistent_read=True)}


def mark(marker_id: str, clock: Clock = SYSTEM_CLOCK) -> None:
    """Record `marker_id` as done without creating anything (what it stands for was done before markers existed)."""
    MarkerRecord(marker_id, created_at=iso(clock.now())).save()


def create_once(marker_id: str, record: Model, absent: Any, clock: Clock = SYSTEM_CLOCK) -> bool:
    """Save `record` where `absent` (its does-not-exist condition) holds, and mark `marker_id`, atomically, unless
    the marker exists. A record that exists already is kept as it is, and marked. True when `record` was saved."""
    marker = MarkerRecord(marker_id, created_at=iso(clock.now()))
    try:
        with writes.transaction() as transaction:
            transaction.save(marker, condition=MarkerRecord.marker_id.does_not_exist())
            transaction.save(record, condition=absent)
        return True
    except TransactWriteError as error:
        marker_refused, record_refused = [
            reason is not None and reason.code == "ConditionalCheckFailed"
            for reason in (error.cancellation_reasons or [None, None])
        ]
        if marker_refused:
            return False
        if not record_refused:
            raise
    mark(marker_id, clock)  # the record was there before any marker: mark it, leave it
    return False
