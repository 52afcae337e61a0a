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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import queues
from chalicelib.backoff import compute_backoff
from chalicelib.clock import Clock
from chalicelib.lanes.messages import DONE, Delivery, Outcome, Retry
from chalicelib.resources import Lane, lane_named
from chalicelib.settings import Settings
from chalicelib.store import slots, statemachine, writes
from chalicelib.store.errors import WriteFailed
from chalicelib.store.records import SlotRecord, TaskRecord
from chalicelib.video.stages import expires_after, video_deadline

log = logging.getLogger(__name__)

# Rechecks of a message that could not park back off from SLOT_WAIT_SECONDS to 8 times that.
MAX_SLOT_WAIT_DOUBLINGS = 3
SQS_MAX_DELAY_S = 900
# Parked tasks a hand-off reads at a time, and at most: usually the first page has one whose user is under the cap.
WAKE_PAGE_SIZE, WAKE_LOOKAHEAD = 10, 50
# What a hand-off reads of each parked task (its worker reads the rest): a page of whole tasks, prompts and all, is
# ten times the bytes to send and parse, on the path from a slot's release to the next task's start.
HANDOFF_FIELDS = ["task_id", "model_id", "user_id", "type", "lane"]
# Users at the cap a hand-off's query filters out at most (DynamoDB's IN takes 100 values).
MAX_FILTERED_USERS = 100
# A slot handed to a parked task waits this long for its worker's claim; a hand-off never claimed (its message
# lost, the waker dead before sending it) is taken back by the sweeper after this, and the task sent a message. The
# handed lease is the worker's own plus this, so a worker woken late still has its whole lease.
HANDOFF_LEASE_S = 30
# Headroom past the Lambda timeout before an image lease counts as abandoned (a worker that died mid-call).
IMAGE_LEASE_MARGIN_S = 60
# Rounds of "refused acquire, park" a delivery tries when slots free under it; then it comes back after a wait.
PARK_ROUNDS = 3


class Relay(Protocol):
    """A worker that may run a task it just handed its slot to, in its own invocation (docs/design.md, "The baton
    pass"), instead of waking it through its lane's queue."""

    def take(self, handed: TaskRecord, whole: bool) -> bool:
        """`handed` holds the slot now (queued, `slot_handed_at` set, no message sent): True when this worker runs
        it (its claim then goes as a woken worker's would), False when it must be woken by a message. `whole`:
        `handed` is the whole task as the hand-off read and wrote it (no read needed before its claim; a stale
        one only makes the claim read it again)."""
        ...


# The relay of the lane worker whose invocation is running here: a release inside it may pass the baton.
_relay: ContextVar[Relay | None] = ContextVar("slot_relay", default=None)


@contextmanager
def relaying(relay: Relay | None) -> Iterator[None]:
    """Releases made inside may hand their slot to `relay` rather than send a wake-up (None: never)."""
    token = _relay.set(relay)
    try:
        yield
    finally:
        _relay.reset(token)


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

    def park(self, task: TaskRecord, refused: slots.Refused) -> bool | None:
        """Park `task` (queued) while the record that refused it is still full; the caller then acknowledges its
        message. False when a slot freed meanwhile (the caller acquires again); None when the task is not waiting
        (claimed, ended or handed a slot: nothing to park, and what the message asks depends on the task)."""
        def build(transaction: TransactWrite) -> None:
            slots.count_parked_in(transaction, task.model_id, +1,
                                  condition=refused.still_full() if refused.slot_key == task.model_id else None)
            if refused.slot_key != task.model_id:
                transaction.condition_check(SlotRecord, refused.slot_key, condition=refused.still_full())
            transaction.update(TaskRecord(task.task_id), actions=[TaskRecord.parked_model.set(task.model_id)],
                               condition=(TaskRecord.status == statemachine.QUEUED)
                               & TaskRecord.slot_handed_at.does_not_exist()
                               # a first message naming another model or user parks nothing: the task is read
                               & (TaskRecord.model_id == task.model_id) & (TaskRecord.user_id == task.user_id))

        on_model = refused.slot_key == task.model_id
        try:
            writes.write_transaction(build)
        except TransactWriteError as error:
            reasons = error.cancellation_reasons or []
            if not writes.condition_failed(error) or not reasons:
                raise
            # The task's condition false: claimed, ended or handed a slot meanwhile. Else the record is not full.
            if reasons[-1] is not None and reasons[-1].code == "ConditionalCheckFailed":
                return None
            if on_model:
                slots.note_full(task.model_id, False)
            return False
        if on_model and not refused.circuit:
            slots.note_full(task.model_id, True)
        return True

    def park_unsent(self, task: TaskRecord) -> bool:
        """Park `task` (queued, holding no slot) whose message to come back by could not be sent: a relayed task's
        retry has no message of its own to fall back on, so the hand-offs (and the sweeper's wake of free slots)
        must find it. False when it is not plainly waiting (claimed, ended, handed a slot, parked already): then
        the sweeper's other nets hold it (a running task's lease, a hand-off's)."""
        def build(transaction: TransactWrite) -> None:
            slots.count_parked_in(transaction, task.model_id, +1)
            transaction.update(TaskRecord(task.task_id), actions=[TaskRecord.parked_model.set(task.model_id)],
                               condition=(TaskRecord.status == statemachine.QUEUED)
                               & TaskRecord.slot_handed_at.does_not_exist()
                               & TaskRecord.parked_model.does_not_exist())

        return _written_unless_refused(build)


def _written_unless_refused(build: Callable[[TransactWrite], None]) -> bool:
    """Write the transaction `build` makes: True when written, False when a condition refused it."""
    try:
        writes.write_transaction(build)
    except TransactWriteError as error:
        if not writes.condition_failed(error):
            raise
        return False
    return True


def lease_until(task: TaskRecord, lane: Lane, now: float, settings: Settings) -> int:
    """How long a task's slot is held for its worker: an image's whole invocation plus a margin; a video's deadline
    if the create goes out now (the record of the create moves it to count from Ark's answer)."""
    if task.type == "video":
        return video_deadline(now, expires_after(settings))
    return math.ceil(now + lane.lambda_timeout_s + IMAGE_LEASE_MARGIN_S)


class Waker:
    """Gives a slot back as a hand-off: to the oldest parked task its model may run, in one transaction with the
    release (the state machine's slot releaser), and, as the sweeper's safety net, free slots to parked tasks."""

    def __init__(self, *, sqs: Any, clock: Clock, settings: Settings) -> None:
        self.sqs = sqs
        self.clock = clock
        self.settings = settings

    def release(self, task: TaskRecord) -> bool:
        """Give back the slot `task` holds, handing it to the oldest parked task whose user is under the cap (one
        transaction: the holder changes, the count stays). True when the slot left `task`."""
        model_id, user_cap = task.model_id, slots.user_cap_seen(task.model_id)
        running_per_user: Counter[str] | None = None
        # A worker that may run the next task itself reads it whole here: the oldest one (no cap to skip past) is
        # the one handed, so its worker claims it without reading it again (one request less per hand-off).
        whole = _relay.get() is not None and user_cap is None
        try:
            candidates = list(TaskRecord.parked_by_model.query(model_id, limit=1 if whole else WAKE_PAGE_SIZE,
                                                               scan_index_forward=True,
                                                               attributes_to_get=None if whole else HANDOFF_FIELDS))
            for candidate in candidates:
                if user_cap is not None and candidate.user_id != task.user_id:
                    if running_per_user is None:  # the model's record names every holder's owner: one read
                        running_per_user = Counter(holder.user_id for holder in slots.holders(model_id).values())
                    if running_per_user[candidate.user_id] >= user_cap:
                        continue
                moved = self._move(task, candidate, user_cap)
                if moved is None:
                    break  # the model's record refused (the releaser no longer holds, limits changed): plainly
                if moved:
                    self._wake(candidate, whole=whole)
                    return True
                if running_per_user is not None:
                    running_per_user[candidate.user_id] = user_cap or 0  # full meanwhile, or it moved on
        except (PynamoDBException, BotoCoreError, ClientError, WriteFailed) as error:
            # Only promptness is lost: the slot is released below and the sweeper wakes parked tasks into it.
            log.warning("could not hand a slot of %s to a parked task: %s", model_id, error)
        released, parked = slots.release_counting_parked(model_id, task.task_id, _user_of_slot(task))
        if released and parked > 0:
            # A task parked after the page was read (or the count is ahead of the index): hand the freed slot over.
            try:
                self.hand_off(model_id)
            except (PynamoDBException, BotoCoreError, ClientError, WriteFailed) as error:
                log.warning("could not hand a slot of %s to a parked task: %s", model_id, error)
        return released

    def _wake(self, handed: TaskRecord, *, whole: bool = False) -> None:
        """`handed` holds a slot now: the worker releasing it runs it when it can (the baton pass), else one
        message to its lane wakes it. Either way nothing is lost if this worker dies now: the sweeper takes back a
        hand-off never claimed."""
        relay = _relay.get()
        if relay is None or not relay.take(handed, whole):
            queues.enqueue(self.sqs, handed.lane, handed.task_id)

    def _move(self, releasing: TaskRecord, candidate: TaskRecord, user_cap: int | None) -> bool | None:
        """One transaction: `releasing`'s slot becomes `candidate`'s, and `candidate` is unparked. True when done,
        False when the candidate (or its user's cap) refused, None when the model's record refused."""
        now = self.clock.now()
        lease = self._handed_lease(candidate, now)
        if releasing.user_slot is None:
            return None  # whether it took its user's slot too is not known: released plainly, both records
        roles: list[tuple[str, str]] = []  # (slot key, role) of the slot records, in the transaction's order

        def build(transaction: TransactWrite) -> None:
            roles[:] = slots.move_in(transaction, releasing.model_id, releasing.task_id, releasing.user_id,
                                     candidate.task_id, candidate.user_id, lease, user_cap=user_cap,
                                     released_user_slot=bool(releasing.user_slot))
            _unpark_handed(transaction, candidate, now, user_slot=user_cap is not None)

        def by_role(refusals: list[str | None]) -> dict[str, str | None]:
            return {role: refusal for (_, role), refusal in zip([*roles, ("", "task")], refusals, strict=False)}

        def missing_user_slot(refusals: list[str | None]) -> str | None:
            outcome = by_role(refusals)  # the candidate's user's record is the last slot record
            return roles[-1][0] if outcome.get("to_user") == "missing" and outcome.get("task") != "refused" else None

        refusals = _write_creating_user_slot(build, missing_user_slot)
        if refusals is None:
            _handed_as_written(candidate, now, user_slot=user_cap is not None)
            return True
        outcome = by_role(refusals)
        if outcome.get("task") == "refused":
            return False  # it moved on: another hand-off took it, or its own acquire won
        if outcome.get("to_user") == "refused" and all(outcome.get(role) is None for role in ("model", "from_user")):
            return False  # the candidate's user is at the cap
        return None

    def _handed_lease(self, candidate: TaskRecord, now: float) -> int:
        """The woken worker's own lease, plus the time its message may take to reach it."""
        return lease_until(candidate, lane_named(candidate.lane), now, self.settings) + HANDOFF_LEASE_S

    def hand_off(self, model_id: str) -> str | None:
        """Take a free slot of the model for its oldest parked task whose user is under the cap, unpark it and send
        it a message; the task id, or None when no slot is free or nothing parked may run. While the model's
        circuit is open nothing is handed, but for the one probe once its cool-down has passed
        (`chalicelib.lanes.circuit`)."""
        state = slots.state(model_id)
        if state.limit is None or state.count >= state.limit:
            return None
        probe_at: float | None = None
        if state.circuit is not None:
            if state.circuit != slots.CIRCUIT_OPEN or (state.circuit_retry_at or math.inf) > self.clock.now():
                return None
            probe_at = self.clock.now()
        running_per_user = Counter(holder.user_id for holder in state.holders.values())
        # Users at the cap are filtered out by the query: however many of their tasks are parked ahead, another
        # user's task is found (their tasks cost read units, not a look-ahead that ends before it).
        at_cap = sorted(user for user, running in running_per_user.items()
                        if user is not None and state.user_cap is not None and running >= state.user_cap)
        at_cap = at_cap[:MAX_FILTERED_USERS]
        seen_any = False
        for candidate in TaskRecord.parked_by_model.query(
                model_id, limit=WAKE_LOOKAHEAD, page_size=WAKE_PAGE_SIZE, scan_index_forward=True,
                attributes_to_get=HANDOFF_FIELDS,
                filter_condition=~TaskRecord.user_id.is_in(*at_cap) if at_cap else None):
            seen_any = True
            if state.user_cap is not None and running_per_user[candidate.user_id] >= state.user_cap:
                continue
            taken = self._take_for(candidate, state.user_cap, probe_at)
            if taken is None:
                return None  # the free slot went to an arriving task: its release hands it over later
            if taken:
                self._wake(candidate)
                return candidate.task_id
            running_per_user[candidate.user_id] = state.user_cap or 0  # its user filled up meanwhile, or it moved on
        if not seen_any and not at_cap and state.parked:
            slots.reset_parked(model_id, state.parked)  # counted ahead of the index: releases read it for nothing
        return None

    def _take_for(self, candidate: TaskRecord, user_cap: int | None, probe_at: float | None = None) -> bool | None:
        """One transaction: a free slot taken for `candidate` and `candidate` unparked (`probe_at`: elected the
        probe of the open circuit). True when done, False when the candidate (or its user's cap) refused, None when
        the model's slots are all taken (or the circuit is no longer open for a probe)."""
        now = self.clock.now()
        lease = self._handed_lease(candidate, now)

        def build(transaction: TransactWrite) -> None:
            slots.take_in(transaction, candidate.model_id, candidate.task_id, lease, user_id=candidate.user_id,
                          user_cap=user_cap, unparking=True, probe_at=probe_at)
            _unpark_handed(transaction, candidate, now, user_slot=user_cap is not None, probe=probe_at is not None)

        user_slot = slots.user_slot_key(candidate.model_id, candidate.user_id)
        # The transaction's items: the model's record, the user's (capped models only), the task.
        refusals = _write_creating_user_slot(
            build, lambda refusals: user_slot if user_cap is not None and len(refusals) == 3
            and refusals[1] == "missing" else None)
        if refusals is None:
            return True
        # The model's record refused while the candidate was still parked: no free slot. The candidate moved
        # on (another hand-off took the slot for it first) or its user is full: the next one may run.
        return None if refusals and refusals[0] is not None and refusals[-1] is None else False

    def take_back(self, task: TaskRecord) -> bool:
        """A slot handed to `task` that it never claimed: one transaction frees it, clears the hand-off (so no
        worker claims without a slot) and parks the task again (so a crash before its next message strands
        nothing: it is found by the index), then the slot goes on to the oldest parked task, maybe this one. False
        when `task` moved on (claimed it meanwhile, or ended)."""
        def build(transaction: TransactWrite) -> None:
            transaction.update(TaskRecord(task.task_id), actions=[
                TaskRecord.slot_handed_at.remove(), TaskRecord.parked_model.set(task.model_id)],
                condition=(TaskRecord.status == statemachine.QUEUED)
                & (TaskRecord.slot_handed_at == task.slot_handed_at))
            slots.release_in(transaction, task.model_id, task.task_id, _user_of_slot(task), parking=True)

        if not _written_unless_refused(build):
            return False
        self.hand_off(task.model_id)
        return True

    def after_limits_changed(self, model_id: str) -> None:
        """A model's limits changed: slots a raise made free go to parked tasks now (the sweeper would, later)."""
        try:
            self.wake_free_slots(model_id)
        except (PynamoDBException, BotoCoreError, ClientError, WriteFailed) as error:
            log.warning("parked tasks of %s left for the next sweep: %s", model_id, error)

    def wake_free_slots(self, model_id: str) -> int:
        """The safety net: hand every free slot of the model to a parked task; how many were woken."""
        woken = 0
        while self.hand_off(model_id) is not None:
            woken += 1
        return woken


def _write_creating_user_slot(build: Callable[[TransactWrite], None],
                              missing_user_slot: Callable[[list[str | None]], str | None]) -> list[str | None] | None:
    """Write a hand-off's transaction; None when written, else each item's refusal (`slots.refusal_of`). When
    `missing_user_slot` finds the user's slot record missing among the refusals (the user's first slot of this
    model), it names the record: created, and the transaction written once more."""
    refusals = _refusals_writing(build)
    if refusals is not None and (slot_key := missing_user_slot(refusals)) is not None:
        slots.ensure_record(slot_key)
        refusals = _refusals_writing(build)
    return refusals


def _refusals_writing(build: Callable[[TransactWrite], None]) -> list[str | None] | None:
    try:
        writes.write_transaction(build)
    except TransactWriteError as error:
        if not writes.condition_failed(error) and error.cause_response_code != "ValidationException":
            raise
        return [slots.refusal_of(reason) for reason in error.cancellation_reasons or []]
    return None


def _unpark_handed(transaction: TransactWrite, candidate: TaskRecord, now: float, *, user_slot: bool,
                   probe: bool = False) -> None:
    """The parked task's side of a hand-off: unparked and marked handed (refused once it moved on); `probe`: it is
    its model's circuit probe, whose outcome closes or re-opens the circuit."""
    transaction.update(TaskRecord(candidate.task_id), actions=[
        TaskRecord.parked_model.remove(), TaskRecord.slot_handed_at.set(math.floor(now)),
        TaskRecord.user_slot.set(user_slot),
        TaskRecord.circuit_probe.set(True) if probe else TaskRecord.circuit_probe.remove()], return_values="ALL_OLD",
        condition=(TaskRecord.parked_model == candidate.model_id) & (TaskRecord.status == statemachine.QUEUED))


def _handed_as_written(candidate: TaskRecord, now: float, *, user_slot: bool) -> None:
    """`candidate` in memory as `_unpark_handed` wrote it (what a claim's condition checks of a hand-off)."""
    candidate.parked_model, candidate.slot_handed_at = None, math.floor(now)
    candidate.user_slot, candidate.circuit_probe = user_slot, None


def _user_of_slot(task: TaskRecord) -> str | None:
    """The user whose slot the task holds beside the model's: none when it took none (unknown: both)."""
    return None if task.user_slot is False else task.user_id
