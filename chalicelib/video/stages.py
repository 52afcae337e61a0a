"""The stages of a running video (`TaskRecord.stage`) and its deadline (docs/design.md, "Videos").

  `submitting`  claimed, Ark create about to be (or being) sent; `external_id` not known yet
  `ark_queued`  Ark accepted it (`external_id` stored) and holds it in its own queue: still cancellable
  `ark_running` Ark is generating it
The task holds its model slot from the claim until its terminal state. A video's deadline
(`TaskRecord.deadline_at`) counts from its Ark create: that expiry plus `VIDEO_DEADLINE_GRACE_S`, so Ark has ended it
before the sweeper would.
"""

from __future__ import annotations

import math

from chalicelib.ark.capabilities import EXPIRES_AFTER
from chalicelib.clock import epoch_of
from chalicelib.settings import Settings
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord

SUBMITTING, ARK_QUEUED, ARK_RUNNING = "submitting", "ark_queued", "ark_running"
STAGE_ORDER = {SUBMITTING: 0, ARK_QUEUED: 1, ARK_RUNNING: 2}
ARK_TERMINAL = {"succeeded": statemachine.SUCCEEDED, "failed": statemachine.FAILED,
                "expired": statemachine.EXPIRED, "cancelled": statemachine.CANCELLED}
ARK_STAGES = {"queued": ARK_QUEUED, "running": ARK_RUNNING}
# A video's deadline is this long past Ark's own expiry of it: time for the last poll (or callback) to see
# Ark's `expired`, for a crashed create's reconcile rounds, and for clocks that differ.
VIDEO_DEADLINE_GRACE_S = 900
# A worker may be inside its create (or a reconcile round) for this long after it last wrote the task; nothing
# ends such a task meanwhile. It is the lanes' create grace.
CREATE_GRACE_S = 60


def at_ark(task: TaskRecord) -> bool:
    """A running video whose Ark task is known: ending it here starts with reading Ark's status."""
    return task.status == statemachine.RUNNING and task.type == "video" and bool(task.external_id)


def queued_at_ark(task: TaskRecord) -> bool:
    """A running video Ark accepted and (as last seen) still queues: the one kind of running task Ark can drop."""
    return at_ark(task) and task.stage == ARK_QUEUED



def expires_after(settings: Settings) -> int:
    """`execution_expires_after` for a create: the platform's deadline, within what Ark accepts."""
    return min(max(settings.task_deadline_s, EXPIRES_AFTER.minimum), EXPIRES_AFTER.maximum)


def video_deadline(created_at: float, expiry_s: int) -> int:
    """The deadline of a video Ark created at `created_at` with that expiry (whole seconds, rounded up)."""
    return math.ceil(created_at + expiry_s + VIDEO_DEADLINE_GRACE_S)


def deadline_of(task: TaskRecord, settings: Settings) -> float:
    """When the sweeper ends the task: a running video's stored deadline (one claimed before deadlines were
    stored counts from its claim); any other task `task_deadline_s` after its creation."""
    if task.type == "video" and task.status == statemachine.RUNNING:
        if task.deadline_at is not None:
            return float(task.deadline_at)
        if task.started_at:
            return video_deadline(epoch_of(task.started_at), expires_after(settings))
    return epoch_of(task.created_at) + settings.task_deadline_s

