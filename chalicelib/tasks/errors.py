"""The errors of task routes beyond validation: what is not there, and what the task's state does not allow."""

from __future__ import annotations

from chalicelib.errors import Conflict, NotFound
from chalicelib.store.records import TaskRecord


def task_not_found(task_id: str) -> NotFound:
    return NotFound(f"No task {task_id!r}.", code="task_not_found")


def not_cancellable(task: TaskRecord) -> Conflict:
    return Conflict(
        "This task can no longer be cancelled.",
        code="not_cancellable",
        details={"status": task.status, "stage": task.stage},
    )


class WorkerOnly(Conflict):
    code = "worker_only"


class VideoAtArk(Conflict):
    code = "video_at_ark"


class WorkerBusy(Conflict):
    code = "worker_busy"


class EndedAtArk(Conflict):
    code = "ended_at_ark"


class GeneratingAtArk(Conflict):
    code = "generating_at_ark"
