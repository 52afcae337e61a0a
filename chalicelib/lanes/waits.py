"""Waiting for a slot: parking, and the hand-off of a released slot (docs/design.md, "Parked tasks").

A task that finds no free slot is parked: one transaction marks it (`parked_model`) while the slot record that
refused it is still full, and its message is acknowledged. A released slot hands itself to the oldest parked task of
its model whose user is under the cap: one transaction takes the slot for it and unparks it, then one message goes
to its lane. The sweeper wakes what a lost hand-off left parked. Other waits (a retry's backoff, a lease still held
by another worker) keep their message and come back on their own, never counting towards the DLQ.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import catalog, queues
from chalicelib.backoff import compute_backoff
from chalicelib.clock import Clock
from chalicelib.errors import NotFound
from chalicelib.lanes.messages import DONE, Delivery, Outcome, Retry
from chalicelib.resources import Lane
from chalicelib.settings import Settings
from chalicelib.store import slots, statemachine, writes
from chalicelib.store.errors import WriteFailed
from chalicelib.store.records import ModelRecord, SlotRecord, TaskRecord, optional_int

log = logging.getLogger(__name__)

# Rechecks of a message that could not park back off from SLOT_WAIT_SECONDS to 8 times that.
MAX_SLOT_WAIT_DOUBLINGS = 3
SQS_MAX_DELAY_S = 900
# Parked tasks a hand-off reads at a time, and at most: usually the first page has one whose user is under the cap.
WAKE_PAGE_SIZE, WAKE_LOOKAHEAD = 10, 50
# A slot handed to a parked task is held this long for it; its worker's acquire extends it to the worker's lease.
# A hand-off whose message was never sent (the waker died) frees the slot after this, and the next sweep sends one.
HANDOFF_LEASE_S = 30
# Rounds of "refused acquire, park" a delivery tries when slots free under it; then it comes back after a wait.
PARK_ROUNDS = 3


class Waiting:
    """How a lane's messages wait: parked for a slot, or back later without counting towards the DLQ."""

    def __init__(self, lane: Lane, *, sqs: Any, settings: Settings, rng: random.Random) -> None:
        self.lane = lane
        self.sqs = sqs
        self.settings = settings
        self.rng = rng

    def wait(self, delivery: Delivery, delay_s: int) -> Outcome:
        """Come back later without counting towards the DLQ: near `max_receives`, re-send instead."""
        if delivery.receive_count < self.lane.max_receives - 1:
            return Retry(delay_s)
        queues.enqueue(self.sqs, self.lane.name, delivery.task_id, delay_s=min(delay_s, SQS_MAX_DELAY_S))
        return DONE

    def slot_wait(self, delivery: Delivery) -> int:
        """Jittered, and longer each time the same message comes back for want of a slot (only when parking kept
        losing to slots freeing under it, or a lost claim)."""
        return round(compute_backoff(delivery.receive_count - 1, base=self.settings.slot_wait_s,
                                     max_exponent=MAX_SLOT_WAIT_DOUBLINGS, spread=(1.0, 2.0), rng=self.rng))

    def park(self, task: TaskRecord, full_slot_key: str, limit: int) -> bool:
        """Park `task` (queued) while the slot record `full_slot_key` is still at `limit`; the caller then
        acknowledges its message. False when a slot freed meanwhile (the caller acquires again); a task no longer
        queued counts as parked: there is nothing to wait for, and the message is done."""
        def build(transaction: TransactWrite) -> None:
            transaction.condition_check(SlotRecord, full_slot_key, condition=SlotRecord.count >= limit)
            transaction.update(TaskRecord(task.task_id), actions=[TaskRecord.parked_model.set(task.model_id)],
                               condition=TaskRecord.status == statemachine.QUEUED)

        try:
            writes.write_transaction(build)
        except TransactWriteError as error:
            reasons = error.cancellation_reasons or []
            if not writes.condition_failed(error) or len(reasons) != 2:
                raise
            _, task_reason = reasons
            # The task's condition false: claimed or ended meanwhile. Else the slot record is no longer full.
            return task_reason is not None and task_reason.code == "ConditionalCheckFailed"
        return True


class Waker:
    """Hands a released slot to the oldest parked task of its model (a listener of the state machine; the
    sweeper's safety net too)."""

    def __init__(self, *, sqs: Any, clock: Clock) -> None:
        self.sqs = sqs
        self.clock = clock

    def wake_next(self, released: TaskRecord) -> None:
        """A slot was given back: hand it to the oldest parked task its model may run now."""
        try:
            self.hand_off(catalog.get_model(released.model_id))
        except (PynamoDBException, BotoCoreError, ClientError, NotFound, WriteFailed) as error:
            # Only promptness is lost: the sweeper wakes parked tasks into free slots.
            log.warning("could not hand a slot of %s to a parked task: %s", released.model_id, error)

    def hand_off(self, model: ModelRecord) -> str | None:
        """Take a free slot of `model` for its oldest parked task whose user is under the cap, unpark it and send
        it a message; the task id, or None when no slot is free or nothing parked may run."""
        user_cap = optional_int(model.max_running_per_user)
        running_per_user: Counter[str] | None = None
        for candidate in TaskRecord.parked_by_model.query(model.model_id, limit=WAKE_LOOKAHEAD,
                                                          page_size=WAKE_PAGE_SIZE, scan_index_forward=True):
            if user_cap is not None:
                if running_per_user is None:  # the model's record names every holder's owner: one read
                    running_per_user = Counter(holder.user_id for holder in slots.holders(model.model_id).values())
                if running_per_user[candidate.user_id] >= user_cap:
                    continue
            taken = self._take_for(candidate, model, user_cap)
            if taken is None:
                return None  # the free slot went to an arriving task: its release hands it over later
            if taken:
                queues.enqueue(self.sqs, candidate.lane, candidate.task_id)
                return candidate.task_id
            if running_per_user is not None:
                running_per_user[candidate.user_id] = user_cap  # its user filled up meanwhile, or it moved on
        return None

    def _take_for(self, candidate: TaskRecord, model: ModelRecord, user_cap: int | None) -> bool | None:
        """One transaction: the slot taken for `candidate` and `candidate` unparked. True when done, False when
        the candidate (or its user's cap) refused, None when the model's slots are all taken."""
        lease_until = math.ceil(self.clock.now() + HANDOFF_LEASE_S)

        def build(transaction: TransactWrite) -> None:
            slots.take_in(transaction, model.model_id, candidate.task_id, int(model.concurrency), lease_until,
                          user_id=candidate.user_id, user_cap=user_cap)
            transaction.update(TaskRecord(candidate.task_id), actions=[TaskRecord.parked_model.remove()],
                               condition=(TaskRecord.parked_model == model.model_id)
                               & (TaskRecord.status == statemachine.QUEUED))

        try:
            writes.write_transaction(build)
        except TransactWriteError as error:
            if not writes.condition_failed(error):
                raise
            refused = [reason is not None and reason.code == "ConditionalCheckFailed"
                       for reason in error.cancellation_reasons or []]
            # The model's record refused while the candidate was still parked: no free slot. The candidate moved
            # on (another hand-off took the slot for it first) or its user is full: the next one may run.
            return None if refused and refused[0] and not refused[-1] else False
        return True

    def wake_free_slots(self, model: ModelRecord) -> int:
        """The safety net: hand every free slot of `model` to a parked task; how many were woken."""
        woken = 0
        for _ in range(max(0, int(model.concurrency) - slots.in_use(model.model_id))):
            if self.hand_off(model) is None:
                break
            woken += 1
        return woken
