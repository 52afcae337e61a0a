"""Video tasks at Ark: submitting exactly once, reconciling after a crash, polling, callbacks.

Sub-steps of a `running` video task (`TaskRecord.stage`):
  `submitting`  claimed, Ark create about to be (or being) sent; `external_id` not known yet
  `ark_queued`  Ark accepted it (`external_id` stored) and holds it in its own queue: still cancellable
  `ark_running` Ark is generating it
The task holds its model slot from the claim until its terminal state.

A task found `submitting` after a crash is reconciled through Ark's task list (same model, created since the
claim, same seed and shape) and never created blindly again. Every task sent to Ark carries a seed (the user's
or one derived from the task id), which is what makes that match reliable.

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
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from chalicelib import aws, media, queues, statemachine
from chalicelib.ark.client import VideoTask, VolcVideoClient, image_content, text_content
from chalicelib.ark.errors import NO_USABLE_ANSWER, ArkError, ArkNotFoundError, task_error
from chalicelib.ark.limits import VIDEO_MAX_SEED
from chalicelib.auth import secret_digest
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.db import TaskRecord
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
RECONCILE_PAGE_SIZE = 100
RECONCILE_MAX_PAGES = 5
# Polls at the base interval this many times before backing off.
POLLS_BEFORE_BACKOFF = 6


def queued_at_ark(task: TaskRecord) -> bool:
    """A running video Ark accepted and still queues: the one kind of running task Ark can still drop."""
    return (task.status == statemachine.RUNNING and task.type == "video" and bool(task.external_id)
            and task.stage == ARK_QUEUED)


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
    def of(cls, task: TaskRecord, s3: Any) -> Submission:
        content: list[dict[str, Any]] = []
        if task.prompt:
            content.append(text_content(task.prompt))
        refs = media.urls_for_ark(s3, task.images)
        roles = ["first_frame", "last_frame"] if len(refs) == 2 else ["first_frame"]
        content += [image_content(url, role) for url, role in zip(refs, roles, strict=False)]
        params = {key: value for key, value in (task.params or {}).items() if key != "seed"}
        return cls({"content": content, "model": task.upstream_model, "seed": seed_of(task), **params})

    def matches(self, remote: VideoTask) -> bool:
        """Whether `remote` (from Ark's list) is what this submission created: same seed and shape."""
        body = self.body
        if remote.seed is not None and remote.seed != body["seed"]:
            return False
        for field in ("resolution", "duration", "frames"):
            sent, seen = body.get(field), getattr(remote, field)
            if sent is not None and seen is not None and sent != seen:
                return False
        ratio = body.get("ratio")
        return ratio in (None, "adaptive") or remote.ratio in (None, ratio)


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
        body = dict(Submission.of(task, self.s3).body)
        return self.client.create_video_task(body.pop("content"), body.pop("model"), callback_url, **body)

    def record_submitted(self, task: TaskRecord, external_id: str) -> TaskRecord:
        """Store Ark's id right after the create and hand the task to the poller; orphans are cancelled."""
        now = self.clock.now()
        try:
            return statemachine.update_fields(
                task,
                [TaskRecord.external_id.set(external_id), TaskRecord.stage.set(ARK_QUEUED),
                 *poll_schedule(task, now, self.settings)],
                publish=True,
                condition=TaskRecord.stage == SUBMITTING,
                clock=self.clock,
            )
        except StaleTask:
            # It ended meanwhile (deadline sweeper): this Ark task is nobody's; stop it while Ark still queues it.
            self.cancel_quietly(external_id)
            raise

    def find_submitted(self, task: TaskRecord) -> VideoTask | None:
        """The Ark task a crashed worker created for `task`, if Ark accepted one (Ark's list, never a create)."""
        claimed_at = epoch_of(task.started_at or task.updated_at)
        window_start = claimed_at - RECONCILE_SLACK_S
        submission = Submission.of(task, self.s3)
        candidates: list[VideoTask] = []
        for page_num in range(1, RECONCILE_MAX_PAGES + 1):
            page = self.client.list_tasks(page_num=page_num, page_size=RECONCILE_PAGE_SIZE,
                                          model=task.upstream_model)
            candidates += [item for item in page.items
                           if item.created_at >= window_start and submission.matches(item)]
            if len(page.items) < RECONCILE_PAGE_SIZE or page.items[-1].created_at < window_start:
                break
        if not candidates:
            return None
        # Two matches only when a user sent the same seed and shape twice within the window: take the closest.
        return min(candidates, key=lambda item: abs(item.created_at - claimed_at))

    def adopt(self, task: TaskRecord, remote: VideoTask) -> TaskRecord:
        """Record a reconciled Ark task as this task's and apply what Ark says about it."""
        task = self.record_submitted(task, remote.id)
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

    # --- cancelling -----------------------------------------------------------------------------------------

    def cancel_at_ark(self, task: TaskRecord) -> bool:
        """Ask Ark to drop a task it still queues; False when Ark refuses (it started meanwhile)."""
        try:
            self.client.cancel_or_delete(task.external_id or "")
        except ArkError as error:
            log.info("Ark refused to cancel %s: %s", task.external_id, error.code)
            return False
        return True

    def cancel_quietly(self, external_id: str) -> None:
        """Best effort: Ark drops it if still queued; a running or finished one is left as it is."""
        try:
            self.client.cancel_or_delete(external_id)
        except ArkError as error:
            log.warning("could not cancel orphaned Ark task %s: %s", external_id, error.code)


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
