"""A running video's status at Ark, read by the scheduled poller and on Ark's callback, and applied here
(docs/design.md, "Status reads").

Both paths end in the same idempotent `apply_remote`: the poller reads running tasks whose `next_poll_at` is due,
from the sparse `video_polls_due` index; Ark's callback is a hint: a terminal callback triggers a status read at once,
a queued/running one only advances `stage`. A success sends the task to its lane again, whose worker copies the video
and last frame into the bucket: the callback route (the API's 28 s) and the poller (many tasks per run) have no time
to stream a video.

A running video is ended here (cancel, the deadline, an operator) only after reading Ark's status: Ark's DELETE also
deletes a finished task, so only a task Ark still queues is cancelled at Ark; a finished one gets Ark's outcome
applied instead (`stop_at_ark`).
"""

from __future__ import annotations

import hmac
import logging
import time
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import DoesNotExist, PynamoDBException
from pynamodb.expressions.update import Action

from chalicelib import observability, queues
from chalicelib.accounts.auth import secret_digest, signed_token
from chalicelib.ark.answers import VideoTask
from chalicelib.ark.client import VolcVideoClient
from chalicelib.ark.errors import NO_USABLE_ANSWER, ArkError, ArkNotFoundError, task_error
from chalicelib.backoff import compute_backoff
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.errors import Unauthorized, error_object
from chalicelib.ids import is_task_id
from chalicelib.media import results
from chalicelib.settings import Settings
from chalicelib.store import statemachine
from chalicelib.store.errors import StaleTask, WriteFailed
from chalicelib.store.records import TaskRecord
from chalicelib.tasks import costs
from chalicelib.video.stages import ARK_QUEUED, ARK_STAGES, ARK_TERMINAL, STAGE_ORDER, SUBMITTING

log = logging.getLogger(__name__)

# The poller's sparse index has one partition: every run reads it with one query. Running videos are few (each model's
# concurrency at Ark) and each writes it once per poll, far below what one partition takes. Tasks scheduled
# before, under another shard, are moved into it by the sweeper (`polled_elsewhere`).
POLL_SHARD = "video-0"
# Polls at the base interval this many times before backing off.
POLLS_BEFORE_BACKOFF = 6


def poll_delay(poll_count: int, settings: Settings) -> float:
    return compute_backoff(poll_count - POLLS_BEFORE_BACKOFF, base=settings.video_poll_interval_s,
                           cap=settings.video_poll_max_interval_s, max_exponent=16)


def poll_schedule(task: TaskRecord, now: float, settings: Settings) -> dict[str, Any]:
    """Put (or keep) the task in the poller's sparse index, due after the back-off for its poll count."""
    return {"poll_shard": POLL_SHARD, "next_poll_at": now + poll_delay(int(task.poll_count or 0), settings)}


def polled_elsewhere(task: TaskRecord) -> bool:
    """A video at Ark that the poller does not read: scheduled under a shard it no longer queries, or not at all."""
    return task.poll_shard != POLL_SHARD or task.next_poll_at is None



class ArkView(StrEnum):
    """What Ark said of a running video about to be ended here (`VideoStatus.stop_at_ark`)."""

    GONE = "gone"  # no longer at Ark: dropped from its queue just now, or unknown to it; end it here
    FINISHED = "finished"  # Ark had ended it: its outcome is applied, the task as written comes back
    RUNNING = "running"  # Ark is generating it: it cannot be stopped there
    UNREACHABLE = "unreachable"  # Ark's status could not be read (or the DELETE not confirmed): nothing changed



class VideoStatus:
    def __init__(self, client: VolcVideoClient, *, sqs: Any, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client
        self.sqs = sqs
        self.settings = settings
        self.clock = clock

    # --- status reads ---------------------------------------------------------------------------------------

    def apply_remote(self, task: TaskRecord, remote: VideoTask) -> TaskRecord:
        """Make the task reflect Ark's view: terminal states end it, others advance `stage`. Idempotent."""
        if task.status != statemachine.RUNNING or remote.id != task.external_id:
            return task
        target = ARK_TERMINAL.get(remote.status)
        if target is None:
            return self._advance(task, ARK_STAGES.get(remote.status))
        task = statemachine.transition(task, target, actions=_outcome_actions(task, remote), clock=self.clock)
        if target == statemachine.SUCCEEDED:
            self._request_results_copy(task)
        return task

    def _request_results_copy(self, task: TaskRecord) -> None:
        """Hand the succeeded task to its lane, whose worker copies the results (`chalicelib.lanes`)."""
        if not self.settings.media_bucket:
            return
        try:
            queues.enqueue(self.sqs, task.lane, task.task_id, copy=results.copy_order(task))
        except (BotoCoreError, ClientError) as error:
            # The task stays succeeded with Ark's links, valid for 24 h.
            log.warning("could not request the results copy of %s: %s", task.task_id, error)

    def _advance(self, task: TaskRecord, stage: str | None) -> TaskRecord:
        """Move `stage` forward only (a late `queued` never undoes `running`)."""
        current = task.stage or SUBMITTING
        if stage is None or STAGE_ORDER[stage] <= STAGE_ORDER.get(current, 0):
            return task
        return statemachine.update_fields(task, [TaskRecord.stage.set(stage)], publish=True,
                                          condition=TaskRecord.stage == current, clock=self.clock)

    def poll(self, task: TaskRecord) -> TaskRecord:
        """One status read for a running task whose next poll is already scheduled (`poll_due` claims it)."""
        try:
            remote = self.client.get_task_status(task.external_id or "")
        except ArkNotFoundError as error:
            return statemachine.transition(
                task, statemachine.FAILED, clock=self.clock,
                actions=[TaskRecord.error.set(task_error("upstream_lost", error.message))],
            )
        except NO_USABLE_ANSWER as error:
            log.warning("status read of %s failed, polling again later: %s", task.task_id, error.code)
            return task
        return self.apply_remote(task, remote)

    def poll_due(self, budget_s: float) -> int:
        """Poll every running video task whose next poll is due (sparse index, no scan); returns the count.

        The index holds whole records: a due one is claimed by one conditional write, which also schedules its next
        poll and returns the record as written, so a poll whose answer changes nothing costs that write alone.
        """
        started = time.monotonic()
        polled = 0
        now = self.clock.now()
        due_tasks = TaskRecord.video_polls_due.query(POLL_SHARD, TaskRecord.next_poll_at <= now)
        for due in observability.per_task(due_tasks, lambda task: task.task_id):
            if time.monotonic() - started > budget_s:
                return polled  # the rest stay due: the next run takes them
            if due.status != statemachine.RUNNING or not due.external_id:
                continue
            try:
                # Claimed before the read: an overlapping run (EventBridge delivers at least once) then finds the
                # task no longer due and leaves it alone; a read that fails is tried at the next poll.
                task = statemachine.update_fields(due, self.next_poll(due, now),
                                                  condition=TaskRecord.next_poll_at == due.next_poll_at,
                                                  clock=self.clock)
                self.poll(task)
                polled += 1
            except StaleTask:
                continue  # ended or changed meanwhile (a callback won the race): nothing left to do
            except ArkError as error:  # this task's read is retried by a later run; the others go on
                log.warning("status read of %s failed: %s", due.task_id, error)
            except (WriteFailed, PynamoDBException) as error:
                # Its poll is still due (or due again soon): the next run reads it; the others go on now.
                log.warning("poll of %s not recorded: %s", due.task_id, error)
        return polled

    def next_poll(self, task: TaskRecord, now: float) -> list[Action]:
        """The write that counts a poll of `task` starting now and schedules the one after it."""
        delay = poll_delay(int(task.poll_count or 0) + 1, self.settings)
        if task.callbacks_arrive:
            delay = max(delay, self.settings.poll_interval_with_callbacks_s)
        return [TaskRecord.poll_count.add(1), TaskRecord.next_poll_at.set(now + delay)]

    def schedule_polls(self, task: TaskRecord) -> TaskRecord:
        """Put a running video the poller does not read back in its index, due after the back-off for its count."""
        schedule = poll_schedule(task, self.clock.now(), self.settings)
        return statemachine.update_fields(task, [getattr(TaskRecord, name).set(value)
                                                 for name, value in schedule.items()],
                                          condition=TaskRecord.external_id == task.external_id, clock=self.clock)

    def on_callback(self, task_id: str, token: str, payload: dict[str, Any]) -> None:
        """Ark's status push: authenticated by the task's signed token (no read); a hint, acted on through a status
        read when terminal. A stage is advanced by one conditional write, which also checks the Ark id."""
        if not token or not is_task_id(task_id):  # checked before any read: DynamoDB refuses oversized keys
            raise _denied()
        signed = hmac.compare_digest(token.encode(), callback_token(self.settings, task_id).encode())
        task = None if signed else _task_with_secret(task_id, token)  # a URL from before tokens were signed
        external_id, status = payload.get("id"), payload.get("status")
        if not isinstance(external_id, str) or not external_id:
            return
        try:
            if status in ARK_TERMINAL:
                # Read first: a callback Ark sends again (or one the poller beat) then costs no status read.
                task = task or _task_if_any(task_id)
                if task is not None and task.status == statemachine.RUNNING and task.external_id == external_id:
                    self.apply_remote(task, self.client.get_task_status(external_id))
            elif status in ARK_STAGES:
                self._advance_at_ark(task_id, external_id, ARK_STAGES[status])
        except StaleTask:
            return  # ended, or already further on (the poller or a retried callback applied it first)

    def _advance_at_ark(self, task_id: str, external_id: str, stage: str) -> None:
        """Move the stage of the task forward to `stage` while it runs Ark task `external_id`, in one write whose
        condition is all it needs to know (the task is not read); StaleTask when nothing was to change.

        The same write marks the task's callbacks as arriving and puts its next poll off to the safety net's
        interval: its terminal callback ends it, and a lost one ends it through the poller at most that late."""
        if STAGE_ORDER[stage] <= STAGE_ORDER[ARK_QUEUED]:
            return  # Ark's id is stored with `ark_queued`: a queued callback has nothing to advance
        behind = [earlier for earlier, order in STAGE_ORDER.items() if order < STAGE_ORDER[stage]]
        running = TaskRecord(task_id, status=statemachine.RUNNING)  # written back as stored, for the listeners
        safety_net_poll = self.clock.now() + self.settings.poll_interval_with_callbacks_s
        statemachine.update_fields(running, [TaskRecord.stage.set(stage), TaskRecord.callbacks_arrive.set(True),
                                             TaskRecord.next_poll_at.set(safety_net_poll)],
                                   publish=True, clock=self.clock,
                                   condition=(TaskRecord.external_id == external_id) & TaskRecord.stage.is_in(*behind))

    # --- ending at Ark -------------------------------------------------------------------------------------

    def stop_at_ark(self, task: TaskRecord) -> tuple[ArkView, TaskRecord]:
        """Before a running video is ended here: read Ark's status first, since Ark's DELETE also deletes a
        finished task. A task Ark still queues is cancelled there (`GONE`); a finished one gets Ark's outcome
        applied (`FINISHED`, with the task as written); one Ark runs is left to finish (`RUNNING`). StaleTask
        when the task changed meanwhile."""
        view, remote = self._drop_if_queued(task.external_id or "")
        return view, task if remote is None else self.apply_remote(task, remote)

    def drop_if_queued(self, external_id: str) -> None:
        """Best effort for an Ark task nobody holds: cancelled at Ark if still queued, else left as it is."""
        view, _ = self._drop_if_queued(external_id)
        log.warning("Ark task %s is no task's; at Ark it is %s", external_id, view)

    def _drop_if_queued(self, external_id: str) -> tuple[ArkView, VideoTask | None]:
        try:
            remote = self.client.get_task_status(external_id)
        except ArkNotFoundError:
            return ArkView.GONE, None
        except ArkError as error:
            log.warning("could not read Ark task %s before ending it: %s", external_id, error.code)
            return ArkView.UNREACHABLE, None
        if remote.status in ARK_TERMINAL:
            return ArkView.FINISHED, remote
        if remote.status != "queued":
            return ArkView.RUNNING, remote
        try:
            self.client.cancel_or_delete(external_id)
        except ArkNotFoundError:
            return ArkView.GONE, None  # it left Ark between the read and the delete: nothing there to wait for
        except ArkError as error:
            # Refused: it started meanwhile (a queued task is always cancellable); or no answer: not confirmed.
            log.info("Ark did not cancel %s: %s", external_id, error.code)
            return ArkView.UNREACHABLE if isinstance(error, NO_USABLE_ANSWER) else ArkView.RUNNING, None
        return ArkView.GONE, None



CALLBACK_TOKEN_PURPOSE = "ark-callback"  # noqa: S105 - what the key signs, not a secret


def _denied() -> Unauthorized:
    return Unauthorized("The callback token is missing or wrong.", code="invalid_callback_token")


def callback_token(settings: Settings, task_id: str) -> str:
    """The token in a task's callback URL: signed with the stage's key, so a callback is authenticated with no
    read. The same for every create of the task: the Ark id a callback names is checked against the stored one."""
    return signed_token(settings.token_signing_key, CALLBACK_TOKEN_PURPOSE, task_id)


def _task_if_any(task_id: str) -> TaskRecord | None:
    try:
        return TaskRecord.get(task_id, consistent_read=True)
    except DoesNotExist:
        return None


def _task_with_secret(task_id: str, token: str) -> TaskRecord:
    """The task whose callback URL (made before tokens were signed) holds this random secret, of which it stores
    the hash."""
    task = _task_if_any(task_id)
    if task is None or not task.callback_secret_hash or not hmac.compare_digest(task.callback_secret_hash,
                                                                                secret_digest(token)):
        raise _denied()
    return task


def _usage(remote: VideoTask) -> dict[str, Any] | None:
    if remote.usage is None:
        return None
    usage: dict[str, Any] = {"completion_tokens": remote.usage.completion_tokens,
                             "total_tokens": remote.usage.total_tokens}
    if remote.usage.tool_usage is not None:
        usage["tool_usage"] = remote.usage.tool_usage.model_dump()
    return usage


def _outcome_actions(task: TaskRecord, remote: VideoTask) -> list[Action]:
    return [*_result_actions(remote), *costs.video_actions(
        task, ARK_TERMINAL[remote.status], _usage(remote), duration=remote.duration, frames=remote.frames,
        service_tier=remote.service_tier)]


def _result_actions(remote: VideoTask) -> list[Action]:
    if remote.status == "succeeded":
        meta = {
            "duration": remote.duration,
            "frames": remote.frames,
            "resolution": remote.resolution,
            "ratio": remote.ratio,
            "seed": remote.seed,
            "usage": _usage(remote),
            "generate_audio": remote.generate_audio,
            "draft": remote.draft,
            "draft_task_id": remote.draft_task_id,
            "priority": remote.priority,
            "service_tier": remote.service_tier,
        }
        actions: list[Action] = [TaskRecord.result_meta.set({key: value for key, value in meta.items()
                                                             if value is not None})]
        if remote.video_url:
            actions.append(TaskRecord.video_url.set(remote.video_url))
        if remote.last_frame_url:
            actions.append(TaskRecord.last_frame_url.set(remote.last_frame_url))
        return actions
    if remote.status == "failed":
        error = remote.error
        return [TaskRecord.error.set(task_error(error.code, error.message) if error else task_error("upstream_failed"))]
    if remote.status == "expired":
        return [TaskRecord.error.set(error_object("expired", "Ark did not finish the video in time."))]
    return []

