"""`PUT /api/tasks/{id}/status`: an operator's (or internal service's) transition, kept within what workers rely on.

Every check below is judged only for a transition the state machine allows; any other is its 409
`illegal_transition`.
  * `running`: never. Only a lane worker holding one of the model's slots starts a task (409 `worker_only`).
  * a running image: only once its worker is gone (its slot lease ended); while the lease lasts, 409
    `worker_busy` (the worker's call would be dropped, and its slot handed on while the call still runs).
  * `running -> queued`: images only. The task gets a fresh lane message, the transition gives its slot back,
    and a worker picks it up again. A running video is
    at Ark, or on its way there (a create may be in flight), and a worker would create it a second time: 409
    `video_at_ark`; fail or cancel it instead.
  * terminal targets: `succeeded` carries its results (`result_urls` for an image, `video_url` for a video), else
    400 `validation_error`. A running video's status at Ark is read first (Ark's DELETE would also delete a
    finished one): finished at Ark, Ark's outcome is applied instead and the change answers 409 `ended_at_ark`;
    still queued there, it is cancelled at Ark; one Ark already generates (or that Ark cannot be asked about)
    cannot be stopped at Ark and finishes there unseen.
  * fields: each target takes exactly what a task in it carries (`schemas.STATUS_FIELDS`: results for
    `succeeded`, an error for `failed` and `expired`, nothing else), and results only of the task's type
    (`last_frame_url` is a video's); anything else is 400 `validation_error` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.expressions.update import Action

from chalicelib import queues
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.errors import ApiError, Unavailable, ValidationFailed
from chalicelib.schemas import StatusUpdateRequest
from chalicelib.store import slots, statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.tasks.errors import EndedAtArk, GeneratingAtArk, VideoAtArk, WorkerBusy, WorkerOnly
from chalicelib.video.stages import SUBMITTING, at_ark
from chalicelib.video.status import ArkView, VideoStatus

# The result field a succeeded task of each type must carry, and every result field it may carry.
RESULT_FIELDS = {"image": "result_urls", "video": "video_url"}
TYPE_RESULT_FIELDS = {"image": frozenset({"result_urls"}), "video": frozenset({"video_url", "last_frame_url"})}


def apply(task: TaskRecord, request: StatusUpdateRequest, *, sqs: Any, video: Callable[[], VideoStatus],
          clock: Clock = SYSTEM_CLOCK) -> TaskRecord:
    """Move `task` (as read) to `request.status` with the results or error it carries; returns the written task.

    `video` gives the service that talks to Ark, made only for a running video at Ark.
    """
    target = request.status
    if statemachine.is_allowed(task.status, target):
        _check_operator_may(task, request, clock.now())
        if target == statemachine.QUEUED:
            # The message goes first: a send that fails changes nothing and can be retried, whereas a task
            # queued without a message would wait for its deadline. A worker reading it before the transition
            # finds the task running and sends it back to the queue itself (or waits out a live worker's lease).
            _send_to_lane(sqs, task)
        elif target in statemachine.TERMINAL and at_ark(task):
            view, task = video().stop_at_ark(task)
            if view == ArkView.FINISHED and task.status == target:
                return task
            if view == ArkView.FINISHED:
                raise EndedAtArk(
                    f"Ark had already finished this video; it is now {task.status}, as Ark reported.",
                    details={"status": task.status},
                )
            # Ark cannot stop a video it generates: ending the task would hand its slot on while Ark still works
            # for it, one call more in flight at Ark than the model's concurrency.
            if view == ArkView.RUNNING:
                raise GeneratingAtArk(
                    "Ark is generating this video and cannot stop it; it ends when Ark finishes it, or at its "
                    "deadline.", details={"stage": task.stage})
            if view == ArkView.UNREACHABLE:
                raise Unavailable("Ark could not be asked whether it still generates this video; try again.",
                                  headers={"Retry-After": "5"})
    return statemachine.transition(task, target, actions=_carried_fields(request), clock=clock)


def _check_operator_may(task: TaskRecord, request: StatusUpdateRequest, now: float) -> None:
    if request.status == statemachine.RUNNING:
        raise WorkerOnly(
            "Only a lane worker holding one of the model's slots can start a task; it starts on its own.",
            details={"from": task.status, "to": request.status},
        )
    if request.status == statemachine.QUEUED and task.type == "video":
        raise VideoAtArk(
            "This video is at Ark, or on its way there: queueing it again would create it twice. "
            "Fail or cancel it instead.",
            details={"status": task.status, "stage": task.stage},
        )
    if (request.status in statemachine.TERMINAL and task.status == statemachine.RUNNING and task.type == "video"
            and task.stage == SUBMITTING):
        # Its create may be at Ark already (answered or not): its slot must stay held until that is settled.
        raise GeneratingAtArk(
            "This video's create is on its way to Ark; once Ark has it, it can be ended (or it ends at its deadline).",
            details={"stage": task.stage})
    if task.status == statemachine.RUNNING and task.type == "image":
        # Its call at Ark would be dropped, and its slot handed on while that call still runs: the model would
        # have one call more in flight than its concurrency.
        holder = slots.holders(task.model_id).get(task.task_id)
        if holder is not None and holder.lease_until >= now:
            raise WorkerBusy(
                "A worker is still calling Ark for this task; if it dies, the task goes back to the queue on its "
                "own once the worker's lease ends.",
                details={"lease_until": iso(holder.lease_until)},
            )
    if request.status == statemachine.SUCCEEDED and not getattr(request, RESULT_FIELDS[task.type]):
        raise ValidationFailed("1 invalid field(s)", details=[{
            "field": RESULT_FIELDS[task.type],
            "message": f"a succeeded {task.type} task needs its results",
            "type": "missing_results",
        }])
    other_types = sorted(set(request.carried()) - TYPE_RESULT_FIELDS[task.type] - {"error"})
    if other_types:
        raise ValidationFailed(f"{len(other_types)} invalid field(s)", details=[
            {"field": name, "message": f"{task.type} tasks carry no {name}", "type": "not_carried"}
            for name in other_types
        ])


def _carried_fields(request: StatusUpdateRequest) -> list[Action]:
    actions: list[Action] = []
    if request.error is not None:
        actions.append(TaskRecord.error.set(request.error.model_dump()))
    if request.result_urls is not None:
        actions.append(TaskRecord.result_urls.set(request.result_urls))
    if request.video_url is not None:
        actions.append(TaskRecord.video_url.set(request.video_url))
    if request.last_frame_url is not None:
        actions.append(TaskRecord.last_frame_url.set(request.last_frame_url))
    return actions


def _send_to_lane(sqs: Any, task: TaskRecord) -> None:
    try:
        queues.enqueue(sqs, task.lane, task.task_id)
    except (BotoCoreError, ClientError) as error:
        raise ApiError("The task could not be handed to its lane and is unchanged; try again.",
                       status=503, code="unavailable") from error
