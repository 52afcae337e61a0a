"""Lane workers: one SQS message `{task_id}` in, at most one Ark call out.

Per message, in this order (`shared/design.md`, two concurrency layers):
  1. acquire the model's slot for the task (idempotent per task id; the model's concurrency is read live),
     with the user's cap when the model sets `max_running_per_user`;
  2. claim it: the conditional transition `queued -> running` (a duplicate delivery or a second worker finds
     it claimed and does nothing; a lost claim gives the slot back);
  3. call Ark: an image is generated and stored; a video is created once and handed to the poller.

A message for a task that already succeeded copies its results into the bucket (`chalicelib.results`): the
poller and Ark's callback send one for every succeeded video, and it finishes an image's copy that a worker
stopped before completing. The copy is idempotent and never fails the task.

No free slot: the message goes back as a batch item failure after a short jittered visibility timeout; the
worker never waits. Waiting is not failing, so a message about to reach the lane's `max_receives` by waiting
alone is replaced by a fresh copy. A slot given back wakes the oldest task deferred for that model (whose user
is under its cap) at once, by making its message visible.

Retryable Ark errors (429, 5xx, timeouts) send the task back to `queued` (slot released) and the message back
with exponential backoff and jitter; on its last receive the task fails with `upstream_unavailable` and the
message goes to the DLQ. Permanent errors fail the task with Ark's code and message. A DynamoDB write that fails
for any reason but its condition raises: the message comes back and nothing done is undone (a video created at
Ark is found again by the reconcile).

Leases: an image's slot lease covers its worker's whole invocation (plus a margin); a video's lease is its
deadline, the same value its claim writes to `deadline_at`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx
from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist, PynamoDBException, UpdateError
from pynamodb.expressions.update import Action

from chalicelib import aws, catalog, db, media, queues, results, slots, statemachine
from chalicelib.ark.client import IMAGE_TIMEOUT, ImageGenerationResult, VolcImageClient, VolcVideoClient
from chalicelib.ark.deadline import call_deadline
from chalicelib.ark.errors import (
    NO_USABLE_ANSWER,
    ArkError,
    ArkInvalidResponseError,
    ArkPermanentError,
    ArkRateLimitError,
    ArkRetryableError,
    gave_up_error,
    task_error,
)
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import ModelRecord, TaskRecord, optional_int
from chalicelib.downloads import Downloads
from chalicelib.errors import NotFound
from chalicelib.resources import Lane, lane_named
from chalicelib.settings import Settings, get_settings
from chalicelib.statemachine import StaleTask
from chalicelib.video import (
    ARK_QUEUED,
    ARK_RUNNING,
    CREATE_GRACE_S,
    SUBMITTING,
    ArkTaskTaken,
    VideoService,
    epoch_of,
    expires_after,
    video_deadline,
)

log = logging.getLogger(__name__)

# Headroom past the Lambda timeout before an image lease counts as abandoned (a worker that died mid-call).
IMAGE_LEASE_MARGIN_S = 60
# Time an image worker keeps after its Ark call's timeout to record the outcome before the Lambda timeout.
IMAGE_RECORD_MARGIN_S = 20
# No-slot rechecks back off from SLOT_WAIT_SECONDS to 8 times that.
MAX_SLOT_WAIT_DOUBLINGS = 3
SQS_MAX_DELAY_S = 900
# Queued tasks of a model a released slot looks through for one it can wake (deferred, user under its cap), read
# a page at a time: usually the first page has one.
WAKE_LOOKAHEAD, WAKE_PAGE_SIZE = 50, 10
# Ark's answers that refuse a call before any work is done: no quota is spent on it here either.
REFUSED_BEFORE_WORK = frozenset({401, 403, 429})
SQS_MAX_VISIBILITY_S = 12 * 3600
RECONCILE_AMBIGUOUS = "reconcile_ambiguous"
# A results copy stops this long before the Lambda timeout: the parts in flight and the upload's abort must still
# end, and the outcome be written.
RESULTS_COPY_MARGIN_S = 60
# With less time than this left after the Ark call, the copy goes to a fresh message instead.
MIN_COPY_TIME_S = 30


@dataclass(frozen=True)
class Delivery:
    """One Lambda-shaped SQS record."""

    message_id: str
    receipt_handle: str
    task_id: str
    receive_count: int
    # `time.monotonic()` by which its work must be done, leaving the Lambda time to record the outcome.
    deadline: float | None = None
    # Whether it has the invocation's time to itself (the batch's first record), or records before it used some.
    first_in_invocation: bool = True

    @classmethod
    def of(cls, record: dict[str, Any], deadline: float | None = None, first_in_invocation: bool = True) -> Delivery:
        return cls(
            message_id=record["messageId"],
            receipt_handle=record["receiptHandle"],
            task_id=json.loads(record["body"])["task_id"],
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", "1")),
            deadline=deadline,
            first_in_invocation=first_in_invocation,
        )


@dataclass(frozen=True)
class Retry:
    """Give the message back: visible again after `delay_s` (or sooner, when `wakeable` and a slot frees)."""

    delay_s: int
    wakeable: bool = False


DONE = None
Outcome = Retry | None


class LaneWorker:
    def __init__(self, lane: Lane, *, sqs: Any, s3: Any, images: VolcImageClient, videos: VolcVideoClient,
                 settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK,
                 rng: random.Random | None = None, downloads: Downloads | None = None) -> None:
        self.lane = lane
        self.sqs = sqs
        self.s3 = s3
        self.images = images
        self.settings = settings or get_settings()
        self.clock = clock
        self.video = VideoService(videos, s3=s3, sqs=sqs, settings=self.settings, clock=clock)
        self.downloads = downloads or Downloads.from_settings(self.settings)
        self.rng = rng or random.Random()

    # --- the batch --------------------------------------------------------------------------------------------

    def handle(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Process a batch; returns Lambda's partial-batch answer (messages to give back)."""
        failures = []
        deadline = time.monotonic() + self.lane.lambda_timeout_s - RESULTS_COPY_MARGIN_S
        for index, record in enumerate(records):
            try:
                delivery = Delivery.of(record, deadline, first_in_invocation=index == 0)
            except (ValueError, KeyError, TypeError):
                # Unreadable: it alone comes back, until the redrive policy moves it to the DLQ.
                log.error("unreadable message %s in lane %s", record.get("messageId"), self.lane.name)
                failures.append({"itemIdentifier": record["messageId"]})
                continue
            try:
                with call_deadline(delivery.deadline):  # every Ark call ends in time to record its outcome
                    outcome = self.process(delivery)
            except Exception:
                # Not acknowledged, so SQS redelivers it after the visibility timeout (and in the end the DLQ).
                log.exception("task %s failed in lane %s", delivery.task_id, self.lane.name)
                failures.append({"itemIdentifier": delivery.message_id})
                continue
            if outcome is not None:
                self._give_back(delivery, outcome)
                failures.append({"itemIdentifier": delivery.message_id})
                if outcome.wakeable:
                    _remember_waiting(delivery)
        return {"batchItemFailures": failures}

    def _give_back(self, delivery: Delivery, retry: Retry) -> None:
        try:
            self.sqs.change_message_visibility(
                QueueUrl=queues.queue_url(self.sqs, self.lane.name),
                ReceiptHandle=delivery.receipt_handle,
                VisibilityTimeout=min(retry.delay_s, SQS_MAX_VISIBILITY_S),
            )
        except ClientError as error:
            # A stale receipt (another copy was received since): it still comes back, after the lane's timeout.
            log.warning("could not delay message %s: %s", delivery.message_id, error)

    def _wait(self, delivery: Delivery, delay_s: int, wakeable: bool = False) -> Outcome:
        """Come back later without counting towards the DLQ: near `max_receives`, re-send instead."""
        if delivery.receive_count < self.lane.max_receives - 1:
            return Retry(delay_s, wakeable)
        queues.enqueue(self.sqs, self.lane.name, delivery.task_id, delay_s=min(delay_s, SQS_MAX_DELAY_S))
        if wakeable:  # the receipt kept from an earlier deferral names the message this one replaces
            _note_wait_receipt(delivery.task_id, None)
        return DONE

    def _slot_wait(self, delivery: Delivery) -> int:
        """Jittered, and longer each time the same message finds no slot: a released slot wakes the oldest
        waiting task at once, so these rechecks are only the fallback, and fewer of them leave the slot
        semaphore and SQS to the tasks that can run."""
        base = self.settings.slot_wait_s * 2 ** min(delivery.receive_count - 1, MAX_SLOT_WAIT_DOUBLINGS)
        return self.rng.randint(base, 2 * base)

    # --- one message ------------------------------------------------------------------------------------------

    def process(self, delivery: Delivery) -> Outcome:
        try:
            task = TaskRecord.get(delivery.task_id, consistent_read=True)
        except DoesNotExist:
            return DONE
        return self._act_on(task, delivery)

    def _act_on(self, task: TaskRecord, delivery: Delivery) -> Outcome:
        """Do what the message asks of `task`, as just read or written."""
        if task.status == statemachine.SUCCEEDED:
            self._keep_results(task, delivery, whole_invocation=delivery.first_in_invocation)
            return DONE
        if task.status == statemachine.RUNNING:
            return self._resume(task, delivery)
        if task.status != statemachine.QUEUED:
            return DONE
        try:
            model = catalog.get_model(task.model_id)
        except NotFound:
            self._fail(task, "model_not_found", f"Model {task.model_id!r} no longer exists.")
            return DONE
        lease_until = self._lease_until(task)
        if not slots.acquire(task.model_id, task.task_id, int(model.concurrency), lease_until,
                             user_id=task.user_id, user_cap=optional_int(model.max_running_per_user)):
            return self._wait(delivery, self._slot_wait(delivery), wakeable=True)
        return self._claim_and_call(task, model, delivery, lease_until)

    def _lease_until(self, task: TaskRecord) -> int:
        if task.type == "video":
            # Held until Ark ends it: its deadline if the create goes out now (the record of the create moves it
            # to count from Ark's answer).
            return video_deadline(self.clock.now(), expires_after(self.settings))
        return math.ceil(self.clock.now() + self.lane.lambda_timeout_s + IMAGE_LEASE_MARGIN_S)

    def _claim_and_call(self, task: TaskRecord, model: ModelRecord, delivery: Delivery, lease_until: int) -> Outcome:
        # Set before the call: a worker that dies mid-call may have had it done at Ark. A refusal (429) undoes it.
        reached_ark_before = bool(task.ark_called)
        actions = [TaskRecord.ark_called.set(True), TaskRecord.wait_receipt.remove()]
        callback_url = None
        if task.type == "video":
            callback_url, callback_actions = self.video.new_callback(task.task_id)
            actions += [*callback_actions, TaskRecord.stage.set(SUBMITTING), TaskRecord.deadline_at.set(lease_until)]
        try:
            task = statemachine.transition(task, statemachine.RUNNING, actions=actions, clock=self.clock)
        except StaleTask:
            return self._after_lost_claim(task.task_id, delivery)
        if task.type == "video":
            return self._submit_video(task, callback_url, delivery, reached_ark_before)
        return self._generate_images(task, delivery, reached_ark_before)

    def _after_lost_claim(self, task_id: str, delivery: Delivery) -> Outcome:
        task = TaskRecord.get(task_id, consistent_read=True)
        if task.status == statemachine.RUNNING:
            return self._resume(task, delivery)  # another delivery claimed it (and holds the slot)
        if task.status == statemachine.QUEUED:
            return self._act_on(task, delivery)  # it changed and came back (a retry): decide again
        # Ended before it ever ran (cancelled, timed out): the slot acquired for it is nobody's.
        slots.release(task.model_id, task.task_id, task.user_id)
        return DONE

    def _resume(self, task: TaskRecord, delivery: Delivery) -> Outcome:
        """A message for a task already running: a duplicate, or the redelivery after a crash."""
        if task.type == "video":
            if task.stage in (ARK_QUEUED, ARK_RUNNING):
                return DONE  # at Ark: the poller and callbacks own it now
            waited = self.clock.now() - epoch_of(task.updated_at)
            if waited < CREATE_GRACE_S:
                return self._wait(delivery, int(CREATE_GRACE_S - waited) + 1)
            return self._reconcile(task, delivery)
        holder = slots.holders(task.model_id).get(task.task_id)
        if holder is not None and holder.lease_until >= self.clock.now():
            # Another worker is calling Ark for it: look again once its lease ends.
            return self._wait(delivery, int(holder.lease_until - self.clock.now()) + 1)
        try:  # the worker died mid-call: back to the queue, then on as a queued task
            task = statemachine.transition(task, statemachine.QUEUED, clock=self.clock)
        except StaleTask:
            return Retry(self._slot_wait(delivery))
        return self._act_on(task, delivery)

    # --- images -----------------------------------------------------------------------------------------------

    def _generate_images(self, task: TaskRecord, delivery: Delivery, reached_ark_before: bool) -> Outcome:
        params = task.params or {}
        max_images = params.get("max_images")
        refs = media.urls_for_ark(self.s3, task.images)
        try:
            result = self.images.create_image_task(
                task.prompt or "", refs or None, params.get("size"), task.upstream_model,
                sequential_image_generation="auto" if max_images and max_images > 1 else None,
                max_images=max_images if max_images and max_images > 1 else None,
                watermark=params.get("watermark"),
            )
        except ArkRetryableError as error:
            return self._retry_later(task, delivery, error, reached_ark_before)
        except (ArkPermanentError, ArkInvalidResponseError) as error:
            # An unreadable answer may have been billed: the task fails rather than calling Ark again.
            self._fail_permanently(task, error, reached_ark_before)
            return DONE
        self._store_images(task, result, delivery)
        return DONE

    def _store_images(self, task: TaskRecord, result: ImageGenerationResult, delivery: Delivery) -> None:
        errors = [{"index": error.index, **task_error(error.code, error.message)} for error in result.errors]
        if not result.images:
            first = task_error(result.errors[0].code, result.errors[0].message) if result.errors else {
                "code": "no_images", "message": "Ark returned no image."}
            self._fail_with(task, first, [TaskRecord.image_errors.set(errors)])
            return
        meta: dict[str, Any] = {"sizes": [image.size for image in result.images]}
        if result.usage:
            meta["usage"] = {"generated_images": result.usage.generated_images,
                             "output_tokens": result.usage.output_tokens, "total_tokens": result.usage.total_tokens}
        succeeded = self._transition(task, statemachine.SUCCEEDED, [
            TaskRecord.result_urls.set([image.url for image in result.images if image.url]),
            TaskRecord.image_errors.set(errors),
            TaskRecord.result_meta.set(meta),
        ])
        if not succeeded:
            return
        if delivery.deadline is not None and delivery.deadline - time.monotonic() < MIN_COPY_TIME_S:
            # A long Ark call left too little of this invocation: a fresh message copies with a whole one.
            if self.settings.media_bucket:
                queues.enqueue(self.sqs, self.lane.name, task.task_id)
            return
        self._keep_results(succeeded, delivery, whole_invocation=False)

    def _keep_results(self, task: TaskRecord, delivery: Delivery, whole_invocation: bool) -> None:
        """Copy a succeeded task's results into the bucket (nothing to do without one, or once copied).

        A copy that runs out of time goes on from a fresh message while that can help: after an Ark call took part
        of this invocation, or when this one stored something (so the rounds end: each stores one more at least).
        """
        stored_before = results.stored_count(task)
        try:
            kept = results.copy_results(task, s3=self.s3, downloads=self.downloads, bucket=self.settings.media_bucket,
                                        clock=self.clock, deadline=delivery.deadline)
        except StaleTask:
            log.info("task %s was deleted before its results were copied", task.task_id)
            return
        if results.ran_out_of_time(kept) and (not whole_invocation or results.stored_count(kept) > stored_before):
            queues.enqueue(self.sqs, self.lane.name, task.task_id)

    # --- videos -----------------------------------------------------------------------------------------------

    def _submit_video(self, task: TaskRecord, callback_url: str | None, delivery: Delivery,
                      reached_ark_before: bool = True) -> Outcome:
        try:
            external_id = self.video.create(task, callback_url)
        except ArkRateLimitError as error:  # refused outright: nothing was created
            return self._retry_later(task, delivery, error, reached_ark_before)
        except NO_USABLE_ANSWER as error:
            # No usable answer: Ark may have created it. Reconcile through its list before any new create.
            log.warning("video create for %s ended without an answer (%s); reconciling later", task.task_id,
                        error.code)
            return self._reconcile_later(task, delivery, error)
        except ArkPermanentError as error:
            self._fail_permanently(task, error, reached_ark_before)
            return DONE
        # StaleTask: it ended meanwhile (the Ark task, nobody's, was dropped if still queued). Any other failure
        # to record it raises: the message comes back and the reconcile finds this Ark task again.
        with contextlib.suppress(StaleTask):
            self.video.record_submitted(task, external_id)
        return DONE

    def _reconcile(self, task: TaskRecord, delivery: Delivery) -> Outcome:
        """After a crash in `submitting`: adopt the Ark task if Ark accepted one, else create (once) now.

        Each look claims a round first (`create_attempt`, which also restarts the grace): of two deliveries
        reconciling at once (a redelivery and the sweeper's message), one goes on and the other stops here.
        """
        try:
            task = take_reconcile_round(task, restart_grace_at=self.clock.now())
        except StaleTask:
            return DONE  # another delivery is reconciling it, or it moved on
        try:
            found = self.video.find_submitted(task)
        except NO_USABLE_ANSWER as error:
            return self._reconcile_later(task, delivery, error)
        try:
            if found.adopt is not None:
                self.video.adopt(task, found.adopt)
                return DONE
            if found.ambiguous:
                if self._fail(task, RECONCILE_AMBIGUOUS, f"Ark holds {len(found.ambiguous)} videos that may be "
                              f"this task's ({', '.join(found.ambiguous)}); none was taken as its result."):
                    self.video.set_aside(task, found.ambiguous)
                return DONE
            if found.undecided:
                return self._reconcile_later(task, delivery)  # a sibling may still claim one: look again
            callback_url, callback_actions = self.video.new_callback(task.task_id)
            task = statemachine.update_fields(task, callback_actions, clock=self.clock,
                                              condition=(TaskRecord.stage == SUBMITTING) & _same_create_attempt(task))
        except ArkTaskTaken:
            return self._reconcile_later(task, delivery)  # another task owned it first: look again without it
        except StaleTask:
            return DONE  # it moved on (another delivery recorded its Ark task, or it ended)
        return self._submit_video(task, callback_url, delivery)

    def _reconcile_later(self, task: TaskRecord, delivery: Delivery, error: ArkError | None = None) -> Outcome:
        """Look at Ark's list again after the grace. Each look counts as a receive, so an Ark that stays down
        ends the task like any other retryable error instead of keeping it `submitting` until its deadline, and
        an Ark task that stays unattributable ends it as ambiguous."""
        if delivery.receive_count < self.lane.max_receives:
            return Retry(CREATE_GRACE_S)
        if error is not None:
            return self._give_up(task, delivery, error)
        self._fail(task, RECONCILE_AMBIGUOUS, "Ark holds a video that may be this task's or another's of the same "
                   "user; none was taken as its result.")
        return Retry(0)

    # --- endings ----------------------------------------------------------------------------------------------

    def _retry_later(self, task: TaskRecord, delivery: Delivery, error: ArkRetryableError,
                     reached_ark_before: bool) -> Outcome:
        undo_claim = _forget_refused_call(task, error, reached_ark_before)
        if delivery.receive_count >= self.lane.max_receives:
            return self._give_up(task, delivery, error, undo_claim)
        self._transition(task, statemachine.QUEUED, undo_claim)
        backoff = min(self.settings.retry_base_s * 2 ** (delivery.receive_count - 1), self.settings.retry_max_s)
        delay = max(error.retry_after or 0, self.rng.uniform(backoff / 2, backoff))
        return Retry(round(delay))

    def _give_up(self, task: TaskRecord, delivery: Delivery, error: ArkError,
                 extra: Sequence[Action] = ()) -> Outcome:
        self._fail_with(task, gave_up_error(error, delivery.receive_count), extra)
        return Retry(0)  # the next receive moves it to the DLQ: a record of what gave up

    def _fail_permanently(self, task: TaskRecord, error: ArkError, reached_ark_before: bool) -> None:
        self._fail_with(task, error.as_task_error(), _forget_refused_call(task, error, reached_ark_before))

    def _fail(self, task: TaskRecord, code: str, message: str, extra: Sequence[Action] = ()) -> TaskRecord | None:
        return self._fail_with(task, {"code": code, "message": message}, extra)

    def _fail_with(self, task: TaskRecord, error: dict[str, str], extra: Sequence[Action] = ()) -> TaskRecord | None:
        return self._transition(task, statemachine.FAILED, [TaskRecord.error.set(error), *extra])

    def _transition(self, task: TaskRecord, target: str, actions: list[Action]) -> TaskRecord | None:
        """The task as written, or None when it changed meanwhile (someone else decided its fate)."""
        try:
            return statemachine.transition(task, target, actions=actions, clock=self.clock)
        except StaleTask:
            log.info("task %s changed before it could become %s", task.task_id, target)
            return None


def _forget_refused_call(task: TaskRecord, error: ArkError, reached_ark_before: bool) -> list[Action]:
    """Ark refused this call before doing any work (401/403: the key or account may not call it; 429: a rate limit,
    or the account's quota used up), so the task counts as having reached Ark only if an earlier attempt did: one
    that only ever met refusals gets its quota request back when it ends. Returns the write of `ark_called` for the
    caller's transition (none when Ark did not refuse: the claim's mark stands)."""
    if error.http_status not in REFUSED_BEFORE_WORK and not isinstance(error, ArkRateLimitError):
        return []
    task.ark_called = reached_ark_before  # read by the transition's quota refund
    return [TaskRecord.ark_called.set(reached_ark_before)]


def take_reconcile_round(task: TaskRecord, restart_grace_at: float | None) -> TaskRecord:
    """Claim the next round of reconciling a video left `submitting`; StaleTask when another took it (or the task
    moved on). `restart_grace_at` also stamps `updated_at`, so other deliveries wait the grace before looking."""
    actions = [TaskRecord.create_attempt.add(1)]
    if restart_grace_at is not None:
        actions.append(TaskRecord.updated_at.set(iso(restart_grace_at)))
    try:
        task.update(actions=actions, condition=(TaskRecord.status == statemachine.RUNNING)
                    & (TaskRecord.stage == SUBMITTING) & _same_create_attempt(task))
    except UpdateError as error:
        raise statemachine.write_error(error, "Another delivery took this reconcile round, or the task moved on.") \
            from error
    return task


def _same_create_attempt(task: TaskRecord) -> Any:
    """The condition that `create_attempt` is still what `task` read (a record from before it counts as 0)."""
    attempt = int(task.create_attempt or 0)
    same = TaskRecord.create_attempt == attempt
    return same | TaskRecord.create_attempt.does_not_exist() if attempt == 0 else same


def _remember_waiting(delivery: Delivery) -> None:
    """Note the receipt of a message deferred for want of a slot, for `wake_next` (after its visibility change,
    which a wake-up must come after)."""
    _note_wait_receipt(delivery.task_id, delivery.receipt_handle)


def _note_wait_receipt(task_id: str, receipt: str | None) -> None:
    """Keep (or, with None, drop) the receipt a wake-up would use, while the task is queued. Only promptness
    depends on it: a write that fails is logged, and the message still comes back on its own."""
    action = TaskRecord.wait_receipt.remove() if receipt is None else TaskRecord.wait_receipt.set(receipt)
    try:
        TaskRecord(task_id).update(actions=[action], condition=TaskRecord.status == statemachine.QUEUED)
    except UpdateError as error:
        if not db.condition_failed(error):  # else claimed or ended meanwhile: nothing is waiting
            log.warning("wait receipt of task %s not updated: %s", task_id, error)


def wake_next(released: TaskRecord) -> None:
    """A slot was given back: make the message of the oldest task waiting for it visible now.

    Only a task deferred for want of a slot is woken (one in a retry's backoff waits it out), and with a per-user
    cap, only one whose user is under it. Taking the receipt off the task first means two releases at once wake
    two different tasks, and no task gets a second message.
    """
    try:
        user_cap = optional_int(catalog.get_model(released.model_id).max_running_per_user)
        users_full: dict[str, bool] = {}
        for candidate in TaskRecord.queued_by_model.query(released.model_id, limit=WAKE_LOOKAHEAD,
                                                          page_size=WAKE_PAGE_SIZE, scan_index_forward=True):
            if not candidate.wait_receipt:
                continue
            if user_cap is not None:
                if candidate.user_id not in users_full:
                    users_full[candidate.user_id] = slots.in_use(
                        slots.user_slot_key(released.model_id, candidate.user_id)) >= user_cap
                if users_full[candidate.user_id]:
                    continue
            if _wake(candidate):
                return
    except (PynamoDBException, ClientError, NotFound) as error:
        # Only promptness is lost: the waiting task's own message comes back after its short wait.
        log.warning("could not wake the next task of %s: %s", released.model_id, error)


def _wake(candidate: TaskRecord) -> bool:
    """Make `candidate`'s deferred message visible; False when another release woke it first."""
    try:
        TaskRecord(candidate.task_id).update(
            actions=[TaskRecord.wait_receipt.remove()],
            condition=(TaskRecord.wait_receipt == candidate.wait_receipt) & (TaskRecord.status == statemachine.QUEUED),
        )
    except UpdateError as error:
        if db.condition_failed(error):
            return False
        raise
    sqs = aws.sqs()
    try:
        sqs.change_message_visibility(QueueUrl=queues.queue_url(sqs, candidate.lane),
                                      ReceiptHandle=candidate.wait_receipt, VisibilityTimeout=0)
    except ClientError as error:
        if "MessageNotInflight" in error.response.get("Error", {}).get("Code", ""):
            return True  # its deferral ended already: it is visible, waiting to be received
        queues.enqueue(sqs, candidate.lane, candidate.task_id)  # the receipt went stale: a fresh message instead
    return True


statemachine.slot_listeners.append(wake_next)


@cache
def worker(lane_name: str) -> LaneWorker:
    """The lane's worker, made once per Lambda container (its HTTP connections are reused)."""
    lane = lane_named(lane_name)
    settings = get_settings()
    # An image call may take minutes: the whole request (every phase) may use the Lambda's time, minus room to
    # record the outcome.
    other_phases = {"connect": IMAGE_TIMEOUT.connect, "write": IMAGE_TIMEOUT.write, "pool": IMAGE_TIMEOUT.pool}
    read_s = lane.lambda_timeout_s - IMAGE_RECORD_MARGIN_S - sum(phase or 0.0 for phase in other_phases.values())
    image_timeout = httpx.Timeout(read=read_s, **other_phases)
    return LaneWorker(
        lane,
        sqs=aws.sqs(),
        s3=aws.s3(),
        images=VolcImageClient.from_settings(settings, timeout=image_timeout),
        videos=VolcVideoClient.from_settings(settings),
        settings=settings,
    )


def handle_batch(lane_name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return worker(lane_name).handle(records)


