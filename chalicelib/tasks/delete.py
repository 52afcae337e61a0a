"""Deleting a finished task (`DELETE /api/tasks/{id}`): its stored objects, then its record."""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DeleteError, DoesNotExist

from chalicelib.errors import Conflict
from chalicelib.media import storage
from chalicelib.metrics import rollup
from chalicelib.store import statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import TaskRecord
from chalicelib.tasks.errors import task_not_found

# Rounds of a delete whose task a results copy pointed at new objects meanwhile (each copy does so once).
DELETE_ATTEMPTS = 3


def delete_task(task: TaskRecord, *, s3: Any, bucket: str) -> int:
    """Remove a finished task: its stored objects, then its record. Returns how many objects were deleted.

    Objects go first, so a failure part-way leaves the record in place and the delete can simply be repeated.
    The record goes only at the version whose objects were removed: a results copy that pointed the task at new
    objects meanwhile (a published change) makes it remove them too. Raises NotFound when a concurrent delete won.
    """
    if task.status not in statemachine.TERMINAL:
        raise Conflict(
            f"Task {task.task_id!r} is {task.status}; cancel it or wait until it ends before deleting it.",
            code="task_not_finished",
        )
    if task.metrics_due is not None:
        # Not counted yet (the sweeper's roll-up counts marks in batches): counted now, or the figures and its
        # owner's cost would lose it with the record.
        rollup.apply(task)
    deleted = 0
    for _ in range(DELETE_ATTEMPTS):
        deleted += storage.delete_prefix(s3, bucket, storage.task_prefix(task.task_id)) if bucket else 0
        try:
            task.delete(condition=TaskRecord.status.is_in(*statemachine.TERMINAL)
                        & (TaskRecord.version == task.version))
            return deleted
        except DeleteError as error:
            if error.cause_response_code != "ConditionalCheckFailedException":
                raise
        try:
            task.refresh(consistent_read=True)
        except DoesNotExist:
            raise task_not_found(task.task_id) from None
    raise StaleTask("The task kept changing while it was being deleted; try again.")
