"""`POST /api/tasks/{id}/cancel`: what can still be stopped, and nothing else.

Queued here: `cancelled` at once (the quota request is given back by the transition). A video Ark still holds
in its own queue: Ark DELETE first, then `cancelled` (the slot is released by the transition). Anything
running at Ark, a running image call, or a finished task: 409 `not_cancellable`.
"""

from __future__ import annotations

from chalicelib import statemachine
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.db import TaskRecord
from chalicelib.errors import Conflict
from chalicelib.statemachine import StaleTask
from chalicelib.tasks import is_cancellable
from chalicelib.video import VideoService

# Each retry follows a concurrent change (a claim, a poll): a few are plenty.
ATTEMPTS = 4


def not_cancellable(task: TaskRecord) -> Conflict:
    return Conflict(
        "This task can no longer be cancelled.",
        code="not_cancellable",
        details={"status": task.status, "stage": task.stage},
    )


def cancel(task: TaskRecord, video: VideoService, clock: Clock = SYSTEM_CLOCK) -> TaskRecord:
    """Cancel `task` (as read) or raise 409; returns the cancelled task."""
    dropped_at_ark = False
    for _ in range(ATTEMPTS):
        if task.status == statemachine.CANCELLED and dropped_at_ark:
            return task  # the poller saw Ark's `cancelled` first
        # Dropped at Ark already: it is cancelled here whatever its `stage` became meanwhile.
        if not (is_cancellable(task) or (dropped_at_ark and task.status == statemachine.RUNNING)):
            raise not_cancellable(task)
        if task.status == statemachine.RUNNING and not dropped_at_ark:
            if not video.cancel_at_ark(task):
                raise not_cancellable(task)
            dropped_at_ark = True
        try:
            return statemachine.transition(task, statemachine.CANCELLED, clock=clock)
        except StaleTask:
            task.refresh(consistent_read=True)
    raise not_cancellable(task)
