"""Video tasks at Ark: submitting exactly once, reconciling after a crash, polling, callbacks.

Sub-steps of a `running` video task (`TaskRecord.stage`):
  `submitting`  claimed, Ark create about to be (or being) sent; `external_id` not known yet
  `ark_queued`  Ark accepted it (`external_id` stored) and holds it in its own queue: still cancellable
  `ark_running` Ark is generating it
The task holds its model slot from the claim until its terminal state.

Every create carries `safety_identifier` (a hash of the owner's user id: Ark's end-user field), a seed (the
user's, or one derived from the task id) and `execution_expires_after` no longer than the platform's deadline
(`TASK_DEADLINE_SECONDS`, within Ark's bounds). A video's deadline (`TaskRecord.deadline_at`) counts from its
Ark create: that expiry plus `VIDEO_DEADLINE_GRACE_S`, so Ark has ended it before the sweeper would.

A task found `submitting` after a crash is reconciled through Ark's task list and never created blindly again.
A listed task is a candidate only when what Ark echoes equals what this task sent: model, seed, resolution,
ratio, duration or frames, `safety_identifier`, and a creation time within the claim window; a field Ark does not
echo counts as no match. An Ark id another task owns is never a candidate: every task records itself as the
owner of its Ark id (`ArkTaskOwnerRecord`, conditionally) before storing it, and the reconcile takes that record
before adopting. One candidate is adopted; none means create (once); two or more fail the task with
`reconcile_ambiguous` rather than guess (and become that task's, so no later reconcile adopts them). While a
sibling (a running task of the same user and model, still `submitting`) could equally have made a candidate,
nothing is decided: the sibling may still claim it.

A running video is ended here (cancel, the deadline, an operator) only after reading Ark's status: Ark's DELETE
also deletes a finished task, so only a task Ark still queues is cancelled at Ark; a finished one gets Ark's
outcome applied instead (`stop_at_ark`).

Status reads come from two paths that end in the same idempotent `apply_remote`: the scheduled poller (running
tasks whose `next_poll_at` is due, read from the sparse `video_polls_due` index) and Ark's callback, which is a
hint: a terminal callback triggers a status read at once; a queued/running one only advances `stage`.
A success sends the task to its lane again, whose worker copies the video and last frame into the bucket: the
callback route (the API's 28 s) and the poller (many tasks per run) have no time to stream a video.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import DoesNotExist, PutError, PynamoDBException
from pynamodb.expressions.update import Action

from chalicelib import aws, db, media, queues, slots, statemachine
from chalicelib.ark.client import VideoTask, VolcVideoClient, image_content, text_content
from chalicelib.ark.errors import NO_USABLE_ANSWER, ArkError, ArkNotFoundError, task_error
from chalicelib.ark.limits import (
    VIDEO_MAX_EXPIRES_AFTER,
    VIDEO_MAX_SEED,
    VIDEO_MIN_EXPIRES_AFTER,
    VIDEO_TASK_RETENTION_S,
)
from chalicelib.auth import secret_digest
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.db import ArkTaskOwnerRecord, TaskRecord
from chalicelib.errors import Unauthorized
from chalicelib.settings import Settings, get_settings
from chalicelib.statemachine import StaleTask
from chalicelib.validation import is_task_id

log = logging.getLogger(__name__)

SUBMITTING, ARK_QUEUED, ARK_RUNNING = "submitting", "ark_queued", "ark_running"
STAGE_ORDER = {SUBMITTING: 0, ARK_QUEUED: 1, ARK_RUNNING: 2}
ARK_TERMINAL = {"succeeded": statemachine.SUCCEEDED, "failed": statemachine.FAILED,
                "expired": statemachine.EXPIRED, "cancelled": statemachine.CANCELLED}
ARK_STAGES = {"queued": ARK_QUEUED, "running": ARK_RUNNING}
# Spreads the index's writes; every poller run queries each shard once, so keep it small.
POLL_SHARDS = 2
CALLBACK_PATH = "/api/queue/callback"
# Ark's list may lag a create by a moment, and clocks differ: look this far around the claim.
RECONCILE_SLACK_S = 120
# A video's deadline is this long past Ark's own expiry of it: time for the last poll (or callback) to see
# Ark's `expired`, for a crashed create's reconcile rounds, and for clocks that differ.
VIDEO_DEADLINE_GRACE_S = 900
# A worker may be inside its create (or a reconcile round) for this long after it last wrote the task; nothing
# ends such a task meanwhile. It is the lanes' create grace.
CREATE_GRACE_S = 60
# Ark keeps a task (and lists it) this long; the owner record outlives that by a day.
ARK_OWNER_RETENTION_S = VIDEO_TASK_RETENTION_S + 24 * 3600
RECONCILE_PAGE_SIZE = 100
RECONCILE_MAX_PAGES = 5
# Polls at the base interval this many times before backing off.
POLLS_BEFORE_BACKOFF = 6


def at_ark(task: TaskRecord) -> bool:
    """A running video whose Ark task is known: ending it here starts with reading Ark's status."""
    return task.status == statemachine.RUNNING and task.type == "video" and bool(task.external_id)


def queued_at_ark(task: TaskRecord) -> bool:
    """A running video Ark accepted and (as last seen) still queues: the one kind of running task Ark can drop."""
    return at_ark(task) and task.stage == ARK_QUEUED


def safety_identifier_of(user_id: str) -> str:
    """Ark's end-user id for a task's owner: a hash (64 hex characters, Ark's limit), never the id itself."""
    return hashlib.sha256(f"arkflow-user:{user_id}".encode()).hexdigest()


def expires_after(settings: Settings) -> int:
    """`execution_expires_after` for a create: the platform's deadline, within what Ark accepts."""
    return min(max(settings.task_deadline_s, VIDEO_MIN_EXPIRES_AFTER), VIDEO_MAX_EXPIRES_AFTER)


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


def poll_shard_of(task_id: str) -> str:
    return f"video-{int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % POLL_SHARDS}"


def seed_of(task: TaskRecord) -> int:
    """The user's seed, else one derived from the task id: random to the user, reproducible for reconciling."""
    seed = (task.params or {}).get("seed")
    if seed is not None and seed >= 0:
        return int(seed)
    return int(hashlib.sha256(task.task_id.encode()).hexdigest(), 16) % (VIDEO_MAX_SEED + 1)


def poll_delay(poll_count: int, settings: Settings) -> float:
    doublings = max(0, poll_count - POLLS_BEFORE_BACKOFF)
    return min(settings.video_poll_interval_s * 2 ** min(doublings, 16), settings.video_poll_max_interval_s)


def poll_schedule(task: TaskRecord, now: float, settings: Settings) -> list[Action]:
    """Put (or keep) the task in the poller's sparse index, due after the back-off for its poll count."""
    return [TaskRecord.poll_shard.set(poll_shard_of(task.task_id)),
            TaskRecord.next_poll_at.set(now + poll_delay(int(task.poll_count or 0), settings))]


@dataclass(frozen=True)
class Submission:
    """What a create sends, minus the callback secret."""

    body: dict[str, Any]

    @classmethod
    def of(cls, task: TaskRecord, s3: Any, settings: Settings) -> Submission:
        content: list[dict[str, Any]] = []
        if task.prompt:
            content.append(text_content(task.prompt))
        refs = media.urls_for_ark(s3, task.images)
        roles = ["first_frame", "last_frame"] if len(refs) == 2 else ["first_frame"]
        content += [image_content(url, role) for url, role in zip(refs, roles, strict=False)]
        params = {key: value for key, value in (task.params or {}).items() if key != "seed"}
        return cls({"content": content, "model": task.upstream_model, "seed": seed_of(task),
                    "safety_identifier": safety_identifier_of(task.user_id),
                    "execution_expires_after": expires_after(settings), **params})

    def matches(self, remote: VideoTask) -> bool:
        """Whether `remote` (from Ark's list) may be what this submission created: every field Ark echoes that
        this submission set is equal. A field Ark did not echo is no match (it cannot tell two users apart)."""
        body = self.body
        model = body["model"]
        # An endpoint id is echoed as the model behind it; the list is filtered by the endpoint at Ark.
        if not remote.model or (not model.startswith("ep-") and remote.model != model):
            return False
        fields = ["seed", "safety_identifier", "resolution", "duration", "frames"]
        if body.get("ratio") != "adaptive":  # Ark echoes the ratio it picked, not `adaptive`
            fields.append("ratio")
        return all(getattr(remote, field) == body[field] for field in fields if body.get(field) is not None)


class ArkTaskTaken(StaleTask):
    """Another task owns this Ark task (it recorded itself as its owner first)."""


@dataclass(frozen=True)
class Reconciliation:
    """What Ark's list says of a `submitting` task: one Ark task to adopt, nothing (create once), several that
    fit (`ambiguous`: fail rather than guess), or some a sibling may still claim (`undecided`: look again)."""

    adopt: VideoTask | None = None
    ambiguous: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)


def claim_ark_task(external_id: str, task_id: str, now: float) -> bool:
    """Record `task_id` as the owner of Ark task `external_id`; False when another task owns it. Idempotent."""
    owner = ArkTaskOwnerRecord(external_id, task_id=task_id, expires_at_epoch=int(now) + ARK_OWNER_RETENTION_S)
    try:
        owner.save(condition=ArkTaskOwnerRecord.external_id.does_not_exist()
                   | (ArkTaskOwnerRecord.task_id == task_id))
    except PutError as error:
        if db.condition_failed(error):
            return False
        raise
    return True


def owners_of(external_ids: list[str]) -> dict[str, str]:
    """Ark task id -> the task that owns it, for those owned."""
    if not external_ids:
        return {}
    return {record.external_id: record.task_id
            for record in ArkTaskOwnerRecord.batch_get(set(external_ids), consistent_read=True)}


class ArkView(StrEnum):
    """What Ark said of a running video about to be ended here (`VideoService.stop_at_ark`)."""

    GONE = "gone"  # no longer at Ark: dropped from its queue just now, or unknown to it; end it here
    FINISHED = "finished"  # Ark had ended it: its outcome is applied, the task as written comes back
    RUNNING = "running"  # Ark is generating it: it cannot be stopped there
    UNREACHABLE = "unreachable"  # Ark's status could not be read (or the DELETE not confirmed): nothing changed


class VideoService:
    def __init__(self, client: VolcVideoClient, *, s3: Any, sqs: Any = None, settings: Settings | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client
        self.s3 = s3
        self.sqs = sqs or aws.sqs()
        self.settings = settings or get_settings()
        self.clock = clock

    # --- submitting -----------------------------------------------------------------------------------------

    def new_callback(self, task_id: str) -> tuple[str | None, list[Action]]:
        """A callback URL with a fresh secret, and the write that stores only the secret's hash."""
        if not self.settings.public_api_url:
            return None, []
        secret = secrets.token_urlsafe(32)
        query = urlencode({"task_id": task_id, "token": secret})
        url = f"{self.settings.public_api_url.rstrip('/')}{CALLBACK_PATH}?{query}"
        return url, [TaskRecord.callback_secret_hash.set(secret_digest(secret))]

    def create(self, task: TaskRecord, callback_url: str | None) -> str:
        """Send the create (once: the client never retries) and return Ark's task id."""
        body = dict(Submission.of(task, self.s3, self.settings).body)
        return self.client.create_video_task(body.pop("content"), body.pop("model"), callback_url, **body)

    def record_submitted(self, task: TaskRecord, external_id: str, *, created_at: float | None = None,
                         expiry_s: int | None = None) -> TaskRecord:
        """Own Ark's task, store its id and hand the task to the poller; its deadline counts from the create
        (`created_at`, Ark's when known, else now; `expiry_s` as sent). StaleTask when another task owns the id
        or this one moved on (an Ark task nobody holds is dropped if Ark still queues it). A failed write raises
        as it is: the create is reconciled later, never undone."""
        now = self.clock.now()
        if not claim_ark_task(external_id, task.task_id, now):
            raise ArkTaskTaken(f"Ark task {external_id} belongs to another task.")
        deadline = video_deadline(now if created_at is None else created_at, expiry_s or expires_after(self.settings))
        try:
            return statemachine.update_fields(
                task,
                [TaskRecord.external_id.set(external_id), TaskRecord.stage.set(ARK_QUEUED),
                 TaskRecord.deadline_at.set(deadline), *poll_schedule(task, now, self.settings)],
                publish=True,
                condition=TaskRecord.stage == SUBMITTING,
                clock=self.clock,
            )
        except StaleTask:
            try:
                current = TaskRecord.get(task.task_id, consistent_read=True)
            except DoesNotExist:
                current = None
            if current is None or current.external_id != external_id:
                # It ended meanwhile (an operator failed it): this Ark task is nobody's.
                self.drop_if_queued(external_id)
            raise

    def find_submitted(self, task: TaskRecord) -> Reconciliation:
        """What Ark holds of a create a crashed worker may have sent for `task` (Ark's list, never a create)."""
        now = self.clock.now()
        window = (epoch_of(task.started_at or task.updated_at) - RECONCILE_SLACK_S, now + RECONCILE_SLACK_S)
        submission = Submission.of(task, self.s3, self.settings)
        listed: list[VideoTask] = []
        for page_num in range(1, RECONCILE_MAX_PAGES + 1):
            page = self.client.list_tasks(page_num=page_num, page_size=RECONCILE_PAGE_SIZE,
                                          model=task.upstream_model)
            listed += [item for item in page.items
                       if window[0] <= item.created_at <= window[1] and submission.matches(item)]
            if len(page.items) < RECONCILE_PAGE_SIZE or page.items[-1].created_at < window[0]:
                break
        owners = owners_of([item.id for item in listed])
        if own := [item for item in listed if owners.get(item.id) == task.task_id]:
            return Reconciliation(adopt=own[0])  # it crashed after taking the id: certainly this task's
        siblings = self._siblings(task)
        taken = {sibling.external_id for sibling in siblings if sibling.external_id}
        candidates = [item for item in listed if item.id not in owners and item.id not in taken]
        contested = [item.id for item in candidates if any(self._could_own(sibling, item) for sibling in siblings)]
        if contested:
            return Reconciliation(undecided=contested)
        if len(candidates) > 1:
            return Reconciliation(ambiguous=[item.id for item in candidates])
        return Reconciliation(adopt=candidates[0] if candidates else None)

    def _siblings(self, task: TaskRecord) -> list[TaskRecord]:
        """The other running tasks of the same user and model (its slot's holders): the tasks whose creates
        look like this one's at Ark."""
        found = []
        for task_id, holder in slots.holders(task.model_id).items():
            if task_id == task.task_id or holder.user_id != task.user_id:
                continue
            try:
                sibling = TaskRecord.get(task_id, consistent_read=True)
            except DoesNotExist:
                continue
            if sibling.status == statemachine.RUNNING and sibling.type == "video":
                found.append(sibling)
        return found

    def _could_own(self, sibling: TaskRecord, candidate: VideoTask) -> bool:
        """Whether `sibling`, not yet holding an Ark id, may have created `candidate` itself."""
        if sibling.external_id or sibling.stage != SUBMITTING:
            return False
        claimed_at = epoch_of(sibling.started_at or sibling.updated_at)
        return (candidate.created_at >= claimed_at - RECONCILE_SLACK_S
                and Submission.of(sibling, self.s3, self.settings).matches(candidate))

    def set_aside(self, task: TaskRecord, external_ids: list[str]) -> None:
        """After `task` failed as ambiguous: its candidates become its own (so no later reconcile adopts one) and
        are dropped at Ark while still queued; nobody will take them as a result."""
        for external_id in external_ids:
            if claim_ark_task(external_id, task.task_id, self.clock.now()):
                self.drop_if_queued(external_id)

    def adopt(self, task: TaskRecord, remote: VideoTask) -> TaskRecord:
        """Own a reconciled Ark task, record it as this task's and apply what Ark says about it. StaleTask when
        another task took it first."""
        task = self.record_submitted(task, remote.id, created_at=float(remote.created_at),
                                     expiry_s=remote.execution_expires_after)
        return self.apply_remote(task, remote)

    # --- status reads ---------------------------------------------------------------------------------------

    def apply_remote(self, task: TaskRecord, remote: VideoTask, extra: list[Action] | None = None) -> TaskRecord:
        """Make the task reflect Ark's view: terminal states end it, others advance `stage`. Idempotent.

        `extra` (the next poll's schedule) goes into the same write when the task stays running.
        """
        if task.status != statemachine.RUNNING or remote.id != task.external_id:
            return task
        target = ARK_TERMINAL.get(remote.status)
        if target is None:
            return self._advance(task, ARK_STAGES.get(remote.status), extra or [])
        task = statemachine.transition(task, target, actions=_outcome_actions(remote), clock=self.clock)
        if target == statemachine.SUCCEEDED:
            self._request_results_copy(task)
        return task

    def _request_results_copy(self, task: TaskRecord) -> None:
        """Hand the succeeded task to its lane, whose worker copies the results (`chalicelib.lanes`)."""
        if not self.settings.media_bucket:
            return
        try:
            queues.enqueue(self.sqs, task.lane, task.task_id)
        except (BotoCoreError, ClientError) as error:
            # The task stays succeeded with Ark's links, valid for 24 h.
            log.warning("could not request the results copy of %s: %s", task.task_id, error)

    def _advance(self, task: TaskRecord, stage: str | None, extra: list[Action]) -> TaskRecord:
        """Move `stage` forward only (a late `queued` never undoes `running`), with `extra` in the same write."""
        current = task.stage or SUBMITTING
        advanced = stage is not None and STAGE_ORDER[stage] > STAGE_ORDER.get(current, 0)
        actions = [*extra, TaskRecord.stage.set(stage)] if advanced else list(extra)
        if not actions:
            return task
        return statemachine.update_fields(task, actions, publish=advanced, condition=TaskRecord.stage == current,
                                          clock=self.clock)

    def poll(self, task: TaskRecord) -> TaskRecord:
        """One status read for a running task; unless it ended, its next poll comes after the back-off."""
        next_poll = [TaskRecord.poll_count.add(1),
                     TaskRecord.next_poll_at.set(self.clock.now() + poll_delay(int(task.poll_count or 0) + 1,
                                                                               self.settings))]
        try:
            remote = self.client.get_task_status(task.external_id or "")
        except ArkNotFoundError as error:
            return statemachine.transition(
                task, statemachine.FAILED, clock=self.clock,
                actions=[TaskRecord.error.set(task_error("upstream_lost", error.message))],
            )
        except NO_USABLE_ANSWER as error:
            log.warning("status read of %s failed, polling again later: %s", task.task_id, error.code)
            return self._advance(task, None, next_poll)
        return self.apply_remote(task, remote, next_poll)

    def poll_due(self, budget_s: float) -> int:
        """Poll every running video task whose next poll is due (sparse index, no scan); returns the count."""
        started = time.monotonic()
        polled = 0
        now = self.clock.now()
        for shard in range(POLL_SHARDS):
            for due in TaskRecord.video_polls_due.query(f"video-{shard}", TaskRecord.next_poll_at <= now):
                if time.monotonic() - started > budget_s:
                    return polled  # the rest stay due: the next run takes them
                try:
                    task = TaskRecord.get(due.task_id, consistent_read=True)
                    if task.status == statemachine.RUNNING and task.external_id:
                        # Claim this read first: an overlapping run (EventBridge delivers at least once) then
                        # finds the task no longer due and leaves it alone.
                        statemachine.update_fields(task, poll_schedule(task, now, self.settings),
                                                   condition=TaskRecord.next_poll_at == due.next_poll_at,
                                                   clock=self.clock)
                        self.poll(task)
                        polled += 1
                except (DoesNotExist, StaleTask):
                    continue  # ended or changed meanwhile (a callback won the race): nothing left to do
                except ArkError as error:  # this task's read is retried by a later run; the others go on
                    log.warning("status read of %s failed: %s", due.task_id, error)
                except (statemachine.WriteFailed, PynamoDBException) as error:
                    # Its poll is still due (or due again soon): the next run reads it; the others go on now.
                    log.warning("poll of %s not recorded: %s", due.task_id, error)
        return polled

    def on_callback(self, task_id: str, token: str, payload: dict[str, Any]) -> None:
        """Ark's status push: authenticated by the task's secret; a hint, acted on through a status read."""
        task = _task_with_secret(task_id, token)
        if task.status != statemachine.RUNNING or not task.external_id or payload.get("id") != task.external_id:
            return  # ended already, or not yet recorded as submitted: the poller has it covered
        status = payload.get("status")
        try:
            if status in ARK_TERMINAL:
                self.apply_remote(task, self.client.get_task_status(task.external_id))
            elif status in ARK_STAGES:
                self._advance(task, ARK_STAGES[status], [])
        except StaleTask:
            return  # the poller (or a retried callback) applied it first

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
        except ArkError as error:
            # Refused: it started meanwhile (a queued task is always cancellable); or no answer: not confirmed.
            log.info("Ark did not cancel %s: %s", external_id, error.code)
            return ArkView.UNREACHABLE if isinstance(error, NO_USABLE_ANSWER) else ArkView.RUNNING, None
        return ArkView.GONE, None


@cache
def default_service() -> VideoService:
    """The poller's and the callback route's service, made once per Lambda container."""
    return VideoService(VolcVideoClient.from_settings(get_settings()), s3=aws.s3(), sqs=aws.sqs())


def _task_with_secret(task_id: str, token: str) -> TaskRecord:
    denied = Unauthorized("The callback token is missing or wrong.", code="invalid_callback_token")
    if not token or not is_task_id(task_id):  # checked before the read: DynamoDB refuses oversized keys
        raise denied
    try:
        task = TaskRecord.get(task_id, consistent_read=True)
    except DoesNotExist:
        raise denied from None
    if not task.callback_secret_hash or not hmac.compare_digest(task.callback_secret_hash, secret_digest(token)):
        raise denied
    return task


def _outcome_actions(remote: VideoTask) -> list[Action]:
    if remote.status == "succeeded":
        meta = {
            "duration": remote.duration,
            "frames": remote.frames,
            "resolution": remote.resolution,
            "ratio": remote.ratio,
            "seed": remote.seed,
            "usage": {"completion_tokens": remote.usage.completion_tokens,
                      "total_tokens": remote.usage.total_tokens} if remote.usage else None,
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
        return [TaskRecord.error.set({"code": "expired", "message": "Ark did not finish the video in time."})]
    return []


def epoch_of(iso_time: str) -> float:
    """Epoch seconds of one of the API's ISO 8601 times."""
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
