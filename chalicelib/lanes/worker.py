"""Lane workers: one SQS message `{task_id}` in, at most one Ark call out (docs/design.md, "Lanes").

Per message, in this order:
  1. acquire the model's slot for the task (idempotent per task id; the model's concurrency is read live),
     with the user's cap when the model sets `max_running_per_user`;
  2. claim it: the conditional transition `queued -> running` (a duplicate delivery or a second worker finds
     it claimed and does nothing; a lost claim gives the slot back);
  3. call Ark: an image is generated and stored (`images`); a video is created once and handed to the poller
     (`videos`).

A message for a task that already succeeded copies its results into the bucket (`copies`). No free slot (or the
model's circuit open: `circuit`): the task is parked and its message acknowledged, until a released slot (or the
circuit's close) hands itself over (`waits`); Ark's errors end as `endings` says. A DynamoDB write that fails
for any reason but its condition raises: the message comes back and nothing done is undone (a video created at
Ark is found again by the reconcile).

Leases: an image's slot lease covers its worker's whole invocation (plus a margin); a video's lease is its
deadline, the same value its claim writes to `deadline_at`.

The baton pass: an image worker whose release hands its slot to a parked task of its lane runs that task itself, in
the same invocation, while enough of it is left (`Batons`); else the task is woken by a message, as before.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib import catalog, observability, queues
from chalicelib.ark.deadline import call_deadline
from chalicelib.clock import Clock, epoch_of
from chalicelib.errors import NotFound
from chalicelib.lanes.copies import ResultCopies
from chalicelib.lanes.endings import Endings
from chalicelib.lanes.images import ImageCalls
from chalicelib.lanes.messages import DONE, Delivery, Outcome, Retry
from chalicelib.lanes.videos import VideoCalls
from chalicelib.lanes.waits import HANDOFF_LEASE_S, PARK_ROUNDS, SQS_MAX_DELAY_S, Waiting, lease_until, relaying
from chalicelib.media import results
from chalicelib.resources import Lane
from chalicelib.settings import Settings
from chalicelib.store import slots, statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import TaskRecord, optional_int
from chalicelib.video.stages import ARK_QUEUED, ARK_RUNNING, CREATE_GRACE_S, SUBMITTING

log = logging.getLogger(__name__)
_READ_FIRST = object()

SQS_MAX_VISIBILITY_S = 12 * 3600
# A results copy stops this long before the Lambda timeout: the parts in flight and the upload's abort must still
# end, and the outcome be written.
RESULTS_COPY_MARGIN_S = 60
# A worker runs a task it handed its slot to (the baton pass) only with this much of its invocation left beyond
# RESULTS_COPY_MARGIN_S: half of what a fresh invocation of the image lane has, so a relayed call is never cut
# shorter than a long image call (a group takes minutes) would need; with less, the task is woken by a message.
BATON_MIN_CALL_S = 120
# Relayed tasks running at once in one invocation: the one calling Ark and the one before it, still recording its
# results. Any more (a circuit's close handing every free slot) are woken by messages, each in its own invocation.
MAX_RELAYED = 2


class LaneWorker:
    def __init__(self, lane: Lane, *, sqs: Any, images: ImageCalls, videos: VideoCalls, copies: ResultCopies,
                 waiting: Waiting, endings: Endings, settings: Settings, clock: Clock) -> None:
        self.lane = lane
        self.sqs = sqs
        self.images = images
        self.videos = videos
        self.copies = copies
        self.waiting = waiting
        self.endings = endings
        self.settings = settings
        self.clock = clock

    # --- the batch --------------------------------------------------------------------------------------------

    def handle(self, records: list[dict[str, Any]],
               time_left: Callable[[], float] | None = None) -> dict[str, Any]:
        """Process a batch; returns Lambda's partial-batch answer (messages to give back). `time_left`: the
        invocation's remaining seconds (Lambda's context); with it, an image lane passes batons (`Batons`)."""
        deadline = time.monotonic() + (time_left() if time_left else self.lane.lambda_timeout_s) \
            - RESULTS_COPY_MARGIN_S
        batons = Batons(self, time_left, deadline) if time_left is not None and self.lane.task_type == "image" \
            else None
        try:
            with relaying(batons):
                failures = self._handle(records, deadline)
        finally:
            if batons is not None:
                batons.wait()  # every relayed task ends inside the invocation that claimed it
        return {"batchItemFailures": failures}

    def _handle(self, records: list[dict[str, Any]], deadline: float) -> list[dict[str, str]]:
        failures = []
        for index, record in enumerate(observability.per_task(records, observability.sqs_task_id)):
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
        return failures

    def run_relayed(self, task_id: str, deadline: float, as_handed: TaskRecord | None = None) -> None:
        """Run a task this invocation handed its slot to (the baton pass): claimed as a woken worker claims it
        (`as_handed`: the task as the hand-off read and wrote it, else read here), called, ended. It has no
        message: what a message would do later (a retry's backoff, a crash's redelivery) is a fresh one."""
        delivery = Delivery(message_id=f"relayed-{task_id}", receipt_handle="", task_id=task_id, receive_count=1,
                            deadline=deadline, first_in_invocation=False)
        try:
            with call_deadline(deadline):
                task = as_handed or TaskRecord.get(task_id, consistent_read=True)
                if task.status != statemachine.QUEUED or task.slot_handed_at is None:
                    return  # it moved on (cancelled, its hand-off taken back, a duplicate message claimed it)
                outcome = self._claim_and_call(task, delivery, self._handed_lease(task), user_slot=task.user_slot,
                                               probe=bool(task.circuit_probe))
        except Exception:
            # As a message would come back: a fresh one decides again from the task (claimed or not).
            log.exception("relayed task %s failed in lane %s", task_id, self.lane.name)
            outcome = Retry(0)
        if outcome is not None:
            self._send_relayed_retry(task_id, outcome)

    def _send_relayed_retry(self, task_id: str, retry: Retry) -> None:
        """A relayed task's fresh message (its outcome asked to come back later). It has no message SQS would give
        back: when the send fails, the task is parked for a slot instead, else it would wait queued, with nothing
        to wake it, until the sweeper timed it out."""
        try:
            queues.enqueue(self.sqs, self.lane.name, task_id, delay_s=min(retry.delay_s, SQS_MAX_DELAY_S))
            return
        except (ClientError, BotoCoreError) as error:
            log.warning("relayed task %s: its message could not be sent (%s); parking it", task_id, error)
        try:
            task = TaskRecord.get(task_id, consistent_read=True)
            if task.status == statemachine.QUEUED and not self.waiting.park_unsent(task):
                log.info("relayed task %s moved on before it could be parked", task_id)
        except (DoesNotExist, PynamoDBException, ClientError, BotoCoreError) as error:
            log.error("relayed task %s is left to the sweeper's deadline: %s", task_id, error)

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

    # --- one message ------------------------------------------------------------------------------------------

    def process(self, delivery: Delivery) -> Outcome:
        ordered = results.ordered_task(delivery.task_id, delivery.copy) if delivery.copy is not None else None
        if ordered is not None:  # a results copy whose message says what it needs: the task is not read
            self.copies.keep(ordered, delivery, whole_invocation=delivery.first_in_invocation)
            return DONE
        if delivery.start is not None:
            started = self._start(delivery, *delivery.start)
            if started is not _READ_FIRST:
                return started
        try:
            task = TaskRecord.get(delivery.task_id, consistent_read=True)
        except DoesNotExist:
            return DONE
        return self._act_on(task, delivery)

    def _start(self, delivery: Delivery, model_id: str, user_id: str) -> Outcome | object:
        """A new task's first message: acquire (or park) before reading the task, which a parked task never needs.
        `_READ_FIRST` when the task must be read first (the slot record has no limits yet)."""
        placeholder = TaskRecord(delivery.task_id, model_id=model_id, user_id=user_id, type=self.lane.task_type)
        parked = slots.looked_full(model_id) and self.waiting.park(placeholder, slots.Refused(model_id))
        if parked is None:  # not waiting (ran, ended, or was handed a slot): what to do depends on the task
            return _READ_FIRST
        if parked:
            return DONE  # parked at once: the model's record is still full
        lease = lease_until(placeholder, self.lane, self.clock.now(), self.settings)
        for _ in range(PARK_ROUNDS):
            try:
                acquired = slots.try_acquire(model_id, delivery.task_id, lease, user_id=user_id, extend_held=False,
                                             now=self.clock.now())
            except slots.SlotsUnconfigured:
                return _READ_FIRST
            if isinstance(acquired, slots.Refused):
                parked = self.waiting.park(placeholder, acquired)  # conditional on the task being queued
                if parked is None:
                    return _READ_FIRST  # not waiting: a succeeded task's copy, a handed task's claim...
                if parked:
                    return DONE
                continue
            try:
                task = TaskRecord.get(delivery.task_id, consistent_read=True)
            except DoesNotExist:
                task = None
            if (task is None or task.model_id != model_id or task.user_id != user_id
                    or task.status != statemachine.QUEUED):
                if acquired.user_slot is not None:  # taken just now for a task that is not waiting: given back
                    placeholder.user_slot = acquired.user_slot
                    statemachine.slot_releaser[0](placeholder)
                return DONE if task is None else self._act_on(task, delivery)
            if task.slot_handed_at is not None:
                return self._act_on(task, delivery)
            if acquired.user_slot is None:  # held from before: an earlier worker died before its claim
                slots.extend_lease(model_id, task.task_id, lease)
            return self._claim_and_call(task, delivery, lease, user_slot=acquired.user_slot, probe=acquired.probe)
        return self.waiting.wait(delivery, self.waiting.slot_wait(delivery))

    def _act_on(self, task: TaskRecord, delivery: Delivery) -> Outcome:
        """Do what the message asks of `task`, as just read or written."""
        if task.status == statemachine.SUCCEEDED:
            self.copies.keep(task, delivery, whole_invocation=delivery.first_in_invocation)
            return DONE
        if task.status == statemachine.RUNNING:
            return self._resume(task, delivery)
        if task.status != statemachine.QUEUED:
            return DONE
        if task.slot_handed_at is not None:
            # A released slot was handed to it (`waits.Waker`): it holds one already, and claims.
            return self._claim_and_call(task, delivery, self._handed_lease(task), user_slot=task.user_slot,
                                        probe=bool(task.circuit_probe))
        lease = lease_until(task, self.lane, self.clock.now(), self.settings)
        for _ in range(PARK_ROUNDS):
            try:
                acquired = slots.try_acquire(task.model_id, task.task_id, lease, user_id=task.user_id,
                                             now=self.clock.now())
            except slots.SlotsUnconfigured:
                if not self._configure_slots(task):
                    return DONE
                acquired = slots.try_acquire(task.model_id, task.task_id, lease, user_id=task.user_id,
                                             now=self.clock.now())
            if isinstance(acquired, slots.Held):
                return self._claim_and_call(task, delivery, lease, user_slot=acquired.user_slot,
                                            probe=acquired.probe)
            # No free slot: parked, the message acknowledged; a released slot hands itself over (waits.Waker).
            if self.waiting.park(task, acquired) is not False:  # parked, or it moved on meanwhile
                return DONE
        return self.waiting.wait(delivery, self.waiting.slot_wait(delivery))

    def _configure_slots(self, task: TaskRecord) -> bool:
        """The model's slot record has no limits yet (or its model was deleted): write them from the model. False
        when the model no longer exists (the task is failed)."""
        try:
            model = catalog.get_model(task.model_id)
        except NotFound:
            self.endings.fail(task, "model_not_found", f"Model {task.model_id!r} no longer exists.")
            return False
        slots.configure(model.model_id, int(model.concurrency), optional_int(model.max_running_per_user),
                        if_missing=True)
        return True

    def _handed_lease(self, task: TaskRecord) -> int:
        """The lease of a handed slot covers a worker woken within `HANDOFF_LEASE_S`; one woken later extends it."""
        lease = lease_until(task, self.lane, self.clock.now(), self.settings)
        if self.clock.now() - float(task.slot_handed_at or 0) > HANDOFF_LEASE_S:
            slots.extend_lease(task.model_id, task.task_id, lease)
        return lease

    def _claim_and_call(self, task: TaskRecord, delivery: Delivery, lease_until: int, *,
                        user_slot: bool | None, probe: bool = False) -> Outcome:
        # Set before the call: a worker that dies mid-call may have had it done at Ark. A refusal (429) undoes it.
        reached_ark_before = bool(task.ark_called)
        actions = [TaskRecord.ark_called.set(True),
                   TaskRecord.user_slot.remove() if user_slot is None else TaskRecord.user_slot.set(user_slot),
                   # the probe of its model's circuit: its outcome closes or re-opens it (`lanes.circuit`)
                   TaskRecord.circuit_probe.set(True) if probe else TaskRecord.circuit_probe.remove()]
        callback_url = None
        if task.type == "video":
            callback_url = self.videos.submitter.callback_url(task.task_id)
            actions += [TaskRecord.stage.set(SUBMITTING), TaskRecord.deadline_at.set(lease_until)]
        try:
            task = statemachine.transition(task, statemachine.RUNNING, actions=actions, clock=self.clock)
        except StaleTask:
            return self._after_lost_claim(task.task_id, delivery, user_slot)
        # Read at most once a minute here: a success clears the model's unavailable flag, if it has one.
        model = catalog.recent_model(task.model_id)
        if task.type == "video":
            return self.videos.submit(task, callback_url, delivery, reached_ark_before, model)
        return self.images.generate(task, delivery, reached_ark_before, model)

    def _after_lost_claim(self, task_id: str, delivery: Delivery, user_slot: bool | None) -> Outcome:
        task = TaskRecord.get(task_id, consistent_read=True)
        if task.status == statemachine.RUNNING:
            return self._resume(task, delivery)  # another delivery claimed it (and holds the slot)
        if task.status == statemachine.QUEUED:
            return self._act_on(task, delivery)  # it changed and came back (a retry): decide again
        # Ended before it ever ran (cancelled, timed out): the slot acquired for it is nobody's. Released as this
        # acquire took it (the record's `user_slot` may be from an earlier run; unknown: both records).
        task.user_slot = user_slot
        statemachine.slot_releaser[0](task)
        return DONE

    def _resume(self, task: TaskRecord, delivery: Delivery) -> Outcome:
        """A message for a task already running: a duplicate, or the redelivery after a crash."""
        if task.type == "video":
            if task.stage in (ARK_QUEUED, ARK_RUNNING):
                return DONE  # at Ark: the poller and callbacks own it now
            waited = self.clock.now() - epoch_of(task.updated_at)
            if waited < CREATE_GRACE_S:
                return self.waiting.wait(delivery, int(CREATE_GRACE_S - waited) + 1)
            return self.videos.reconcile(task, delivery)
        holder = slots.holders(task.model_id).get(task.task_id)
        if holder is not None and holder.lease_until >= self.clock.now():
            # Another worker is calling Ark for it: look again once its lease ends.
            return self.waiting.wait(delivery, int(holder.lease_until - self.clock.now()) + 1)
        try:  # the worker died mid-call: back to the queue, then on as a queued task
            task = statemachine.transition(task, statemachine.QUEUED, clock=self.clock)
        except StaleTask:
            return Retry(self.waiting.slot_wait(delivery))
        return self._act_on(task, delivery)


class Batons:
    """One invocation's baton passes (`waits.Relay`): a task its releases hand a slot to runs here, on a thread of
    its own (the releasing task still publishes and copies its results meanwhile), while the invocation has time
    left for a whole image call."""

    def __init__(self, worker: LaneWorker, time_left: Callable[[], float], deadline: float) -> None:
        self.worker = worker
        self.time_left = time_left
        self.deadline = deadline
        self._lock = threading.Lock()
        self._running: list[threading.Thread] = []
        self._thread_name = f"{threading.current_thread().name}-relay"  # the invocation's, for its log lines

    def take(self, handed: TaskRecord, whole: bool) -> bool:
        if handed.lane != self.worker.lane.name or handed.type != self.worker.lane.task_type:
            return False
        if self.time_left() - RESULTS_COPY_MARGIN_S < BATON_MIN_CALL_S:
            return False
        with self._lock:
            self._running = [thread for thread in self._running if thread.is_alive()]
            if len(self._running) >= MAX_RELAYED:
                return False
            # Its own copy of the context: the invocation's call deadline and relay, its task named in its lines.
            context = contextvars.copy_context()
            thread = threading.Thread(target=context.run, args=(self._run, handed.task_id, handed if whole else None),
                                      daemon=True, name=self._thread_name)
            try:
                thread.start()
            except RuntimeError:
                return False  # no thread to be had: a message wakes it
            self._running.append(thread)
        return True

    def _run(self, task_id: str, as_handed: TaskRecord | None) -> None:
        for _ in observability.per_task([task_id], str):
            self.worker.run_relayed(task_id, self.deadline, as_handed)

    def wait(self) -> None:
        """Until every relayed task (and those they relayed in turn) has ended."""
        while True:
            with self._lock:
                alive = [thread for thread in self._running if thread.is_alive()]
                self._running = alive
            if not alive:
                return
            for thread in alive:
                thread.join()
