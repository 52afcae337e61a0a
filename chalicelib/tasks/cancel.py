"""`POST /api/tasks/{id}/cancel`: what can still be stopped, and nothing else.

Queued here: `cancelled` at once (the quota request is given back by the transition). A video Ark (as last seen)
still holds in its own queue: Ark's status is read first, since Ark's DELETE also deletes a finished task. Still
queued there: Ark DELETE, then `cancelled` (the slot is released by the transition). Finished at Ark meanwhile:
Ark's outcome is applied and the cancel answers 409 `not_cancellable` with the status it now has. Anything running
at Ark, a running image call, or a finished task: 409 `not_cancellable`. Ark's status cannot be read: 503.
"""

from __future__ import annotations

from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.errors import Unavailable
from chalicelib.store import statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import TaskRecord
from chalicelib.tasks.errors import not_cancellable
from chalicelib.video.stages import queued_at_ark
from chalicelib.video.status import ArkView, VideoStatus

# Each retry follows a concurrent change (a claim, a poll): a few are plenty.
ATTEMPTS = 4


def is_cancellable(task: TaskRecord) -> bool:
    """Queued here, or a video that Ark still holds in its own queue."""
    return task.status == statemachine.QUEUED or queued_at_ark(task)


def cancel(task: TaskRecord, video: VideoStatus, clock: Clock = SYSTEM_CLOCK) -> TaskRecord:
    """Cancel `task` (as read) or raise 409; returns the cancelled task."""
    dropped_at_ark = False
    for _ in range(ATTEMPTS):
        if task.status == statemachine.CANCELLED and dropped_at_ark:
            return task  # the poller saw Ark's `cancelled` first
        # Dropped at Ark already: it is cancelled here whatever its `stage` became meanwhile.
        if not (is_cancellable(task) or (dropped_at_ark and task.status == statemachine.RUNNING)):
            raise not_cancellable(task)
        try:
            if task.status == statemachine.RUNNING and not dropped_at_ark:
                view, task = video.stop_at_ark(task)
                if view == ArkView.UNREACHABLE:
                    raise Unavailable("Ark could not be asked about this video; nothing changed, try again.",
                                      headers={"Retry-After": "5"})
                if view == ArkView.FINISHED and task.status == statemachine.CANCELLED:
                    return task  # Ark had cancelled it already (its outcome is applied)
                if view != ArkView.GONE:
                    raise not_cancellable(task)  # Ark runs it, or finished it (its outcome is applied)
                dropped_at_ark = True
            return statemachine.transition(task, statemachine.CANCELLED, clock=clock)
        except StaleTask:
            task.refresh(consistent_read=True)
    raise not_cancellable(task)
