"""Parking and hand-offs keep their promises under any interleaving of arrivals, parks, releases, duplicate
messages, lost wake-ups and sweeps (a Hypothesis state machine on the real store, in-process moto).

Invariants, after every step: the model's slots never exceed its concurrency nor a user's its cap, every running
task holds a slot, no task is claimed twice. At the end: with hand-offs alone every task runs unless a wake-up was
lost, and after one sweep every task has run.

The steps a worker does between its refused acquire and its park are separate rules, so a release can fall between
them (the race the park's condition check closes).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from chalicelib import queues
from chalicelib.clock import SYSTEM_CLOCK, iso
from chalicelib.lanes.waits import Waiting, Waker
from chalicelib.resources import lane_named
from chalicelib.settings import get_settings
from chalicelib.store import slots, statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import ModelRecord, TaskRecord

USERS = ("u-ana", "u-bo", "u-cy")
LEASE_S = 600
_sequence = itertools.count()


class ParkingModel(RuleBasedStateMachine):
    def __init__(self, sent: list[str]) -> None:
        super().__init__()
        self.sent = sent  # the lane's messages (task ids), as the waker sends them
        sent.clear()
        self.model_id = f"sm-{uuid.uuid4().hex[:10]}"
        self.concurrency, self.cap = 0, None
        self.messages: list[str] = []  # deliveries not yet handled (originals, hand-offs, duplicates)
        self.refused: list[tuple[str, str, int]] = []  # refused acquires whose park has not happened yet
        self.tasks: list[str] = []
        self.claims: Counter[str] = Counter()
        self.running: list[str] = []  # claimed here, not finished yet
        self.lost_wakeups = False
        self.waiting = Waiting(lane_named("image"), sqs=None, settings=get_settings(), rng=None)  # type: ignore
        self.waker = Waker(sqs=None, clock=SYSTEM_CLOCK)
        self.listening = True
        self._listeners = statemachine.slot_listeners[:]
        statemachine.slot_listeners[:] = [self._on_release]

    def _on_release(self, task: TaskRecord) -> None:
        if self.listening:
            self.waker.wake_next(task)
        else:
            self.lost_wakeups = True

    def teardown(self) -> None:
        statemachine.slot_listeners[:] = self._listeners

    # --- set-up ---------------------------------------------------------------------------------------------

    @precondition(lambda self: self.concurrency == 0)
    @rule(concurrency=st.integers(1, 3), cap=st.one_of(st.none(), st.integers(1, 2)))
    def make_model(self, concurrency: int, cap: int | None) -> None:
        self.concurrency, self.cap = concurrency, cap
        now = iso(time.time())
        ModelRecord(self.model_id, type="image", upstream_model="m", display_name="m", concurrency=concurrency,
                    daily_quota=1000, max_running_per_user=cap, lane="image", created_at=now,
                    updated_at=now).save()

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
        full = slots.try_acquire(self.model_id, task_id, self.concurrency, time.time() + LEASE_S,
                                 user_id=task.user_id, user_cap=self.cap)
        if full is not None:
            self.refused.append((task_id, full, self.concurrency if full == self.model_id else int(self.cap or 0)))
            return
        try:
            statemachine.transition(task, statemachine.RUNNING)
            self.claims[task_id] += 1
            self.running.append(task_id)
        except StaleTask:
            pass  # another delivery claimed it (and holds the same slot)

    @precondition(lambda self: self.refused)
    @rule(data=st.data())
    def park(self, data: st.DataObject) -> None:
        task_id, full, limit = self.refused.pop(data.draw(st.integers(0, len(self.refused) - 1)))
        task = TaskRecord.get(task_id, consistent_read=True)
        if not self.waiting.park(task, full, limit):
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

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self.messages.append(data.draw(st.sampled_from(self.tasks)))

    @precondition(lambda self: self.concurrency)
    @rule()
    def sweep(self) -> None:
        self.waker.wake_free_slots(ModelRecord.get(self.model_id, consistent_read=True))
        self._take_sent()

    # --- invariants -----------------------------------------------------------------------------------------

    @invariant()
    def slots_stay_within_the_caps(self) -> None:
        if not self.concurrency:
            return
        holders = slots.holders(self.model_id)
        assert len(holders) == slots.in_use(self.model_id) <= self.concurrency
        if self.cap is not None:
            assert max(Counter(holder.user_id for holder in holders.values()).values(), default=0) <= self.cap
        assert set(self.running) <= set(holders)

    @invariant()
    def no_task_is_claimed_twice(self) -> None:
        assert all(count == 1 for count in self.claims.values())

    def check_nothing_stranded(self) -> None:
        """Run everything out; only a lost wake-up may need the sweep."""
        self._drain()
        stranded = [task_id for task_id in self.tasks if self._status(task_id) != statemachine.SUCCEEDED]
        assert not stranded or self.lost_wakeups, f"stranded without a lost wake-up: {stranded}"
        self.sweep()
        self._drain()
        assert all(self._status(task_id) == statemachine.SUCCEEDED for task_id in self.tasks)

    # --- helpers --------------------------------------------------------------------------------------------

    def _drain(self) -> None:
        for _ in range(200):
            if self.refused:
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

    run_state_machine_as_test(Checked, settings=settings(max_examples=60, stateful_step_count=25, deadline=None))
