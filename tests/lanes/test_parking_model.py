"""Parking and hand-offs keep their promises under any interleaving of arrivals, parks, releases, duplicate
messages, lost wake-ups, baton passes (the releasing worker runs the task it handed its slot to), workers dying
mid-baton and sweeps (a Hypothesis state machine on the real store, in-process moto).

Invariants, after every step: the model's slots never exceed its concurrency nor a user's its cap (once lowered,
no slot is taken until the holders are under the new limit), every running task holds a slot, no task is claimed
twice, a task handed a slot holds it, and the model's parked count is never below the parked tasks. At the end: with
hand-offs alone every task runs unless a wake-up was lost, and after one sweep every task has run.

The steps a worker does between its refused acquire and its park are separate rules, so a release can fall between
them (the race the park's condition check closes); so are a relayed task's read and its claim, so a sweep's
take-back or a duplicate message's claim can fall between them (the race the claim's condition closes).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from chalicelib import catalog, queues
from chalicelib.clock import SYSTEM_CLOCK, iso
from chalicelib.lanes import waits
from chalicelib.lanes.waits import Waiting, Waker
from chalicelib.resources import lane_named
from chalicelib.schemas import ModelUpdate
from chalicelib.settings import get_settings
from chalicelib.store import slots, statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import ModelRecord, TaskRecord

# `make test` runs 30 examples; `make test-deep` (HYPOTHESIS_PROFILE=deep) ten times as many.
DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
USERS = ("u-ana", "u-bo", "u-cy")
LEASE_S = 600
ENDED = (statemachine.SUCCEEDED, statemachine.CANCELLED)
_sequence = itertools.count()


class ParkingModel(RuleBasedStateMachine):
    def __init__(self, sent: list[str]) -> None:
        super().__init__()
        self.sent = sent  # the lane's messages (task ids), as the waker sends them
        sent.clear()
        self.model_id = f"sm-{uuid.uuid4().hex[:10]}"
        self.concurrency, self.cap = 0, None
        self.messages: list[str] = []  # deliveries not yet handled (originals, hand-offs, duplicates)
        self.refused: list[tuple[str, slots.Refused]] = []  # refused acquires whose park has not happened yet
        self.tasks: list[str] = []
        self.claims: Counter[str] = Counter()
        self.running: list[str] = []  # claimed here, not finished yet
        self.lost_wakeups = False
        self.relaying = True  # the next release's worker runs the task it hands its slot to (the baton pass)
        self.relayed: list[str] = []  # handed to a releasing worker, not read yet
        self.read_relayed: list[TaskRecord] = []  # read by that worker, not claimed yet
        self.waiting = Waiting(lane_named("image"), sqs=None, settings=get_settings(), rng=None)  # type: ignore
        self.waker = Waker(sqs=None, clock=SYSTEM_CLOCK, settings=get_settings())
        self.listening = True
        # Holders above the limit are allowed only after a lowering, and only as many as were held then.
        self.ceiling = 0
        self.user_ceiling: Counter[str] = Counter()
        self._releaser = statemachine.slot_releaser[:]
        statemachine.slot_releaser[:] = [self._on_release]

    def _on_release(self, task: TaskRecord) -> bool:
        if not self.listening:
            self.lost_wakeups = True
            return statemachine.release_plainly(task)
        with waits.relaying(self if self.relaying else None):
            return self.waker.release(task)

    def take(self, handed: TaskRecord, whole: bool) -> bool:
        """The releasing worker's relay (`waits.Relay`): it will read and claim the task itself."""
        self.relayed.append(handed.task_id)
        return True

    def teardown(self) -> None:
        statemachine.slot_releaser[:] = self._releaser

    # --- set-up ---------------------------------------------------------------------------------------------

    @precondition(lambda self: self.concurrency == 0)
    @rule(concurrency=st.integers(1, 3), cap=st.one_of(st.none(), st.integers(1, 2)))
    def make_model(self, concurrency: int, cap: int | None) -> None:
        self.concurrency, self.cap = concurrency, cap
        now = iso(time.time())
        ModelRecord(self.model_id, type="image", upstream_model="m", display_name="m", concurrency=concurrency,
                    daily_quota=1000, max_running_per_user=cap, lane="image", created_at=now,
                    updated_at=now).save()
        self.ceiling = concurrency

    @precondition(lambda self: self.concurrency)
    @rule(concurrency=st.integers(1, 3), cap=st.integers(1, 2))
    def reconfigure(self, concurrency: int, cap: int) -> None:
        """An admin changes the model's limits (the slot record's with them) while tasks wait and run, as the
        admin route does: slots a raise made free go to parked tasks at once. A cap is changed, never set on a
        model without one (tasks running uncapped hold no user slot: docs/design.md, "Parked tasks")."""
        cap_now = None if self.cap is None else cap
        catalog.update_model(self.model_id, ModelUpdate(concurrency=concurrency, max_running_per_user=cap_now))
        self.waker.after_limits_changed(self.model_id)
        self._take_sent()
        cap = cap_now  # type: ignore[assignment]
        holders = slots.holders(self.model_id)
        self.concurrency, self.cap = concurrency, cap
        self.ceiling = max(concurrency, len(holders))
        self.user_ceiling = Counter(holder.user_id for holder in holders.values())

    # --- the rules ------------------------------------------------------------------------------------------

    @precondition(lambda self: self.concurrency and len(self.tasks) < 6)
    @rule(user=st.sampled_from(USERS))
    def submit(self, user: str) -> None:
        now = iso(time.time())
        task_id = f"tsk_{self.model_id}_{next(_sequence):04d}"
        TaskRecord(task_id, user_id=user, model_id=self.model_id, type="image", status=statemachine.QUEUED,
                   upstream_model="m", lane="image", created_at=now, updated_at=now,
                   created_key=f"{now}#{next(_sequence):06d}", list_shard="shard-0",
                   queued_model=self.model_id).save()
        self.tasks.append(task_id)
        self.messages.append(task_id)

    @precondition(lambda self: self.messages)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """A worker's first step on a message: acquire and claim, or a refusal (its park is a later step)."""
        task_id = self.messages.pop(data.draw(st.integers(0, len(self.messages) - 1)))
        task = TaskRecord.get(task_id, consistent_read=True)
        if task.status != statemachine.QUEUED:
            return  # a duplicate of a task running or done
        user_slot = task.user_slot
        if task.slot_handed_at is None:  # else a released slot was handed to it: it claims (as the worker does)
            try:
                acquired = slots.try_acquire(self.model_id, task_id, time.time() + LEASE_S, user_id=task.user_id)
            except slots.SlotsUnconfigured:
                slots.configure(self.model_id, self.concurrency, self.cap, if_missing=True)
                self.messages.append(task_id)
                return
            if isinstance(acquired, slots.Refused):
                self.refused.append((task_id, acquired))
                return
            user_slot = acquired.user_slot
        self._claim(task, user_slot)

    def _claim(self, task: TaskRecord, user_slot: bool | None) -> None:
        try:
            statemachine.transition(task, statemachine.RUNNING, actions=[
                TaskRecord.user_slot.remove() if user_slot is None else TaskRecord.user_slot.set(user_slot)])
            self.claims[task.task_id] += 1
            self.running.append(task.task_id)
        except StaleTask:
            pass  # another delivery claimed it (and holds the same slot), or its hand-off was taken back

    @precondition(lambda self: self.refused)
    @rule(data=st.data())
    def park(self, data: st.DataObject) -> None:
        task_id, refused = self.refused.pop(data.draw(st.integers(0, len(self.refused) - 1)))
        task = TaskRecord.get(task_id, consistent_read=True)
        if self.waiting.park(task, refused) is False:
            self.messages.append(task_id)  # a slot freed meanwhile: the worker acquires again

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        """The task's worker ends it: its release hands the slot over (unless the next wake-up is to be lost)."""
        task_id = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        try:
            statemachine.transition(TaskRecord.get(task_id, consistent_read=True), statemachine.SUCCEEDED)
        finally:
            self.listening = True
        self._take_sent()

    @precondition(lambda self: self.running and self.listening)
    @rule()
    def lose_the_next_wake_up(self) -> None:
        self.listening = False

    @precondition(lambda self: self.running)
    @rule(on=st.booleans())
    def pass_batons(self, on: bool) -> None:
        """Whether the next releases run the task they hand their slot to in their own worker."""
        self.relaying = on

    @precondition(lambda self: self.relayed)
    @rule(data=st.data(), then=st.sampled_from(("nothing", "its message", "a sweep")))
    def relayed_read(self, data: st.DataObject, then: str) -> None:
        """The releasing worker reads the task it handed its slot to, as `LaneWorker.run_relayed` does; `then`:
        what comes before its claim (a message of the task sent earlier and delivered now, a sweep taking the
        hand-off back), the races its claim's condition closes."""
        task = TaskRecord.get(self.relayed.pop(data.draw(st.integers(0, len(self.relayed) - 1))),
                              consistent_read=True)
        if task.status == statemachine.QUEUED and task.slot_handed_at is not None:
            self.read_relayed.append(task)
        if then == "its message":
            self.messages.append(task.task_id)
            self.deliver(_Last())
        elif then == "a sweep":
            self.sweep()

    @precondition(lambda self: self.read_relayed)
    @rule(data=st.data())
    def relayed_claim(self, data: st.DataObject) -> None:
        task = self.read_relayed.pop(data.draw(st.integers(0, len(self.read_relayed) - 1)))
        self._claim(task, task.user_slot)

    @precondition(lambda self: self.relayed or self.read_relayed)
    @rule(data=st.data())
    def relaying_worker_dies(self, data: st.DataObject) -> None:
        """The releasing worker dies between its hand-off and its claim: no message exists for the task."""
        pending: list[Any] = self.relayed if self.relayed else self.read_relayed
        pending.pop(data.draw(st.integers(0, len(pending) - 1)))
        self.lost_wakeups = True  # only the sweep finds it (the slot handed and never claimed)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self.messages.append(data.draw(st.sampled_from(self.tasks)))

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """The user cancels a task that is still queued (parked, or handed a slot it has not claimed yet)."""
        task = TaskRecord.get(data.draw(st.sampled_from(self.tasks)), consistent_read=True)
        if task.status == statemachine.QUEUED:
            with contextlib.suppress(StaleTask):  # parked, handed or claimed meanwhile: the user would try again
                statemachine.transition(task, statemachine.CANCELLED)
        self._take_sent()

    @precondition(lambda self: self.concurrency)
    @rule()
    def sweep(self) -> None:
        """The sweeper: hand-offs never claimed are taken back (their task sent a message), free slots handed."""
        for task_id in self.tasks:
            task = TaskRecord.get(task_id, consistent_read=True)
            if task.status == statemachine.QUEUED and task.slot_handed_at is not None and self.waker.take_back(task):
                self.messages.append(task_id)
        self.waker.wake_free_slots(self.model_id)
        self._take_sent()

    # --- invariants -----------------------------------------------------------------------------------------

    @invariant()
    def slots_stay_within_the_caps(self) -> None:
        if not self.concurrency:
            return
        holders = slots.holders(self.model_id)
        assert len(holders) == slots.in_use(self.model_id) <= self.ceiling
        self.ceiling = max(self.concurrency, min(self.ceiling, len(holders)))
        if self.cap is not None:
            for user, held in Counter(holder.user_id for holder in holders.values()).items():
                assert held <= max(self.cap, self.user_ceiling[user])
                self.user_ceiling[user] = min(self.user_ceiling[user], held)
        assert set(self.running) <= set(holders)

    @invariant()
    def hand_offs_hold_their_slots_and_parks_are_counted(self) -> None:
        if not self.concurrency:
            return
        tasks = [TaskRecord.get(task_id, consistent_read=True) for task_id in self.tasks]
        handed = {task.task_id for task in tasks if task.status == statemachine.QUEUED and task.slot_handed_at}
        assert handed <= set(slots.holders(self.model_id))
        assert slots.state(self.model_id).parked >= sum(task.parked_model is not None for task in tasks)

    @invariant()
    def no_task_is_claimed_twice(self) -> None:
        assert all(count == 1 for count in self.claims.values())

    def check_nothing_stranded(self) -> None:
        """Run everything out; only a lost wake-up may need the sweep."""
        self._drain()
        stranded = [task_id for task_id in self.tasks if self._status(task_id) not in ENDED]
        assert not stranded or self.lost_wakeups, f"stranded without a lost wake-up: {stranded}"
        self.sweep()
        self._drain()
        assert all(self._status(task_id) in ENDED for task_id in self.tasks)

    # --- helpers --------------------------------------------------------------------------------------------

    def _drain(self) -> None:
        for _ in range(200):
            if self.read_relayed:
                self.relayed_claim(_First())
            elif self.relayed:
                self.relayed_read(_First(), "nothing")
            elif self.refused:
                self.park(_First())
            elif self.messages:
                self.deliver(_First())
            elif self.running:
                self.finish(_First())
            else:
                return
            self.slots_stay_within_the_caps()
            self.no_task_is_claimed_twice()
        raise AssertionError("the drain did not end")

    def _take_sent(self) -> None:
        self.messages += self.sent
        self.sent.clear()

    @staticmethod
    def _status(task_id: str) -> str:
        return TaskRecord.get(task_id, consistent_read=True).status


class _First:
    """A `data` that always picks the first choice (the drain's deterministic steps)."""

    def draw(self, strategy: Any) -> Any:
        return 0


class _Last:
    """A `data` that picks the message just added."""

    def draw(self, strategy: Any) -> Any:
        return -1


@pytest.mark.hypothesis
def test_parking_and_hand_offs_keep_their_promises(aws_resources: None, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(queues, "enqueue", lambda _sqs, _lane, task_id, **_kwargs: sent.append(task_id))

    class Checked(ParkingModel):
        def __init__(self) -> None:
            super().__init__(sent)

        def teardown(self) -> None:
            try:
                if self.concurrency:
                    self.check_nothing_stranded()
            finally:
                super().teardown()

    run_state_machine_as_test(Checked, settings=settings(max_examples=300 if DEEP else 30, stateful_step_count=25,
                                                                  deadline=None))
