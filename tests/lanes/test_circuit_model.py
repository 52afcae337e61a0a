"""The circuit breaker keeps its promises under any interleaving of arrivals, deliveries, Ark's answers, probes,
cool-downs, sweeps and an admin's close (a Hypothesis state machine on the real store, in-process moto).

Invariants, after every step: never more slots held than the model's concurrency, every running task holds one, at
most one probe is in flight for the circuit's current opening (none while it is open again), a probe is elected only
out of an open circuit past its cool-down, and, at the end, once Ark answers and the circuit is closed, every task
has run: none was lost while it waited.

`stale_probe` is the write of a worker that saw the circuit open and its cool-down passed before another worker
elected itself: the election's condition must refuse it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
import uuid
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from chalicelib import queues
from chalicelib.ark.errors import ArkServerError
from chalicelib.clock import iso
from chalicelib.lanes.circuit import Breaker
from chalicelib.lanes.waits import Waiting, Waker
from chalicelib.resources import lane_named
from chalicelib.settings import get_settings
from chalicelib.store import slots, statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import ModelRecord, SlotRecord, TaskRecord
from tests.clocks import FrozenClock

LEASE_S = 600
_sequence = itertools.count()


class CircuitModel(RuleBasedStateMachine):
    def __init__(self, sent: list[str]) -> None:
        super().__init__()
        self.sent = sent
        sent.clear()
        self.model_id = f"cm-{uuid.uuid4().hex[:10]}"
        self.clock = FrozenClock()
        self.settings = dataclasses.replace(get_settings(), circuit_threshold=1, circuit_window_s=60,
                                            circuit_cooldown_s=10, circuit_max_open_s=10**6)
        self.waker = Waker(sqs=None, clock=self.clock, settings=self.settings)
        self.breaker = Breaker(settings=self.settings, clock=self.clock, waker=self.waker)
        self.waiting = Waiting(lane_named("image"), sqs=None, settings=self.settings, rng=None)  # type: ignore
        self.concurrency = 0
        self.tasks: list[str] = []
        self.messages: list[str] = []
        # running task -> the opening of the circuit it was let through as its probe (None: not a probe)
        self.running: dict[str, float | None] = {}
        self._releaser = statemachine.slot_releaser[:]
        statemachine.slot_releaser[:] = [self.waker.release]

    def teardown(self) -> None:
        statemachine.slot_releaser[:] = self._releaser

    @precondition(lambda self: not self.concurrency)
    @rule(concurrency=st.integers(1, 3))
    def make_model(self, concurrency: int) -> None:
        now = iso(time.time())
        ModelRecord(self.model_id, type="image", upstream_model="m", display_name="m", concurrency=concurrency,
                    daily_quota=1000, lane="image", created_at=now, updated_at=now).save()
        slots.configure(self.model_id, concurrency, None)
        self.concurrency = concurrency

    @precondition(lambda self: self.concurrency and len(self.tasks) < 5)
    @rule()
    def submit(self) -> None:
        now = iso(time.time())
        task_id = f"tsk_{self.model_id}_{next(_sequence):04d}"
        TaskRecord(task_id, user_id="u-ana", model_id=self.model_id, type="image", status=statemachine.QUEUED,
                   upstream_model="m", lane="image", created_at=now, updated_at=now,
                   created_key=f"{now}#{next(_sequence):06d}", list_shard="shard-0",
                   queued_model=self.model_id).save()
        self.tasks.append(task_id)
        self.messages.append(task_id)

    @precondition(lambda self: self.messages)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """A worker on a message: claims a handed slot, or acquires (maybe as the probe), or parks."""
        task = TaskRecord.get(self.messages.pop(data.draw(st.integers(0, len(self.messages) - 1))),
                              consistent_read=True)
        if task.status != statemachine.QUEUED:
            return
        if task.slot_handed_at is not None:
            self._claim(task, bool(task.circuit_probe))
            return
        acquired = slots.try_acquire(self.model_id, task.task_id, self.clock.now() + LEASE_S, now=self.clock.now())
        if isinstance(acquired, slots.Held):
            self._claim(task, acquired.probe)
        elif self.waiting.park(task, acquired) is False:
            self.messages.append(task.task_id)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def stale_probe(self, data: st.DataObject) -> None:
        """The probe's election sent by a worker whose view of the circuit is stale."""
        task = TaskRecord.get(data.draw(st.sampled_from(self.tasks)), consistent_read=True)
        if task.status != statemachine.QUEUED or task.task_id in slots.holders(self.model_id):
            return
        before = SlotRecord.get(self.model_id, consistent_read=True)
        try:
            slots._take_one(self.model_id, slots._model_take(task.task_id, self.clock.now() + LEASE_S, None, None,
                                                            probe_at=self.clock.now()))
        except slots.SlotRefused:
            return
        # Elected: only out of an open circuit whose cool-down has passed, so never a second one.
        assert before.circuit == slots.CIRCUIT_OPEN, (before.circuit, before.circuit_probe)
        assert before.circuit_retry_at <= self.clock.now()
        self._claim(task, True)

    @precondition(lambda self: self.running)
    @rule(data=st.data(), succeeds=st.booleans())
    def ark_answers(self, data: st.DataObject, succeeds: bool) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.running)))
        self._answer(task_id, succeeds)

    @rule(seconds=st.sampled_from([1, 11]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.concurrency)
    @rule()
    def sweep(self) -> None:
        self.breaker.sweep(self.model_id)
        self.waker.wake_free_slots(self.model_id)
        self._take_sent()

    @precondition(lambda self: self.concurrency)
    @rule()
    def admin_closes(self) -> None:
        self.breaker.close(self.model_id)
        self._take_sent()

    # --- invariants -----------------------------------------------------------------------------------------

    @invariant()
    def slots_stay_within_concurrency(self) -> None:
        if self.concurrency:
            holders = slots.holders(self.model_id)
            assert len(holders) <= self.concurrency
            assert set(self.running) <= set(holders)

    @invariant()
    def at_most_one_probe_in_flight(self) -> None:
        if not self.concurrency:
            return
        record = SlotRecord.get(self.model_id, consistent_read=True)
        if record.circuit is None:
            return
        probes = [task for task, opening in self.running.items() if opening == record.circuit_opened_at]
        assert len(probes) <= (1 if record.circuit == slots.CIRCUIT_HALF_OPEN else 0), (record.circuit, probes)

    def check_no_task_lost(self) -> None:
        """Ark answers from now on, an admin closes the circuit: every task runs, once."""
        self.admin_closes()
        for _ in range(100):
            if self.messages:
                self.deliver(_First())
            elif self.running:
                self._answer(sorted(self.running)[0], True)
            else:
                break
        self.sweep()
        while self.messages or self.running:
            if self.messages:
                self.deliver(_First())
            else:
                self._answer(sorted(self.running)[0], True)
        statuses = {task: TaskRecord.get(task, consistent_read=True).status for task in self.tasks}
        assert set(statuses.values()) <= {statemachine.SUCCEEDED}, statuses

    # --- helpers --------------------------------------------------------------------------------------------

    def _claim(self, task: TaskRecord, probe: bool) -> None:
        try:
            statemachine.transition(task, statemachine.RUNNING, clock=self.clock, actions=[
                TaskRecord.circuit_probe.set(True) if probe else TaskRecord.circuit_probe.remove()])
        except StaleTask:
            return
        opening = SlotRecord.get(self.model_id, consistent_read=True).circuit_opened_at if probe else None
        self.running[task.task_id] = opening

    def _answer(self, task_id: str, succeeds: bool) -> None:
        del self.running[task_id]
        task = TaskRecord.get(task_id, consistent_read=True)
        if succeeds:
            self.breaker.passed(task)
            statemachine.transition(task, statemachine.SUCCEEDED, clock=self.clock)
        else:
            self.breaker.failed(task, ArkServerError("InternalServiceError", "down", 500))
            with contextlib.suppress(StaleTask):
                statemachine.transition(task, statemachine.QUEUED, clock=self.clock)
            self.messages.append(task_id)  # its message comes back after the backoff
        self._take_sent()

    def _take_sent(self) -> None:
        self.messages += self.sent
        self.sent.clear()


class _First:
    def draw(self, strategy: Any) -> Any:
        return 0


@pytest.mark.hypothesis
def test_the_circuit_lets_one_probe_through_and_loses_no_task(aws_resources: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(queues, "enqueue", lambda _sqs, _lane, task_id, **_kwargs: sent.append(task_id))

    class Checked(CircuitModel):
        def __init__(self) -> None:
            super().__init__(sent)

        def teardown(self) -> None:
            try:
                if self.concurrency:
                    self.check_no_task_lost()
            finally:
                super().teardown()

    budget = max(4, settings.default.max_examples // 20)  # 5 on `ci`, 150 on `deep`
    run_state_machine_as_test(Checked, settings=settings(max_examples=budget, stateful_step_count=20,
                                                         deadline=None))


def test_of_two_workers_that_saw_the_cool_down_pass_only_one_sends_the_probe(aws_resources: None) -> None:
    clock, settings_ = FrozenClock(), dataclasses.replace(get_settings(), circuit_threshold=1, circuit_cooldown_s=10)
    model_id = f"cm-{uuid.uuid4().hex[:10]}"
    slots.configure(model_id, 3, None)
    Breaker(settings=settings_, clock=clock, waker=Waker(sqs=None, clock=clock, settings=settings_)).failed(
        TaskRecord("tsk_failing", model_id=model_id), ArkServerError("InternalServiceError", "down", 500))
    lease = clock.now() + LEASE_S
    assert isinstance(slots.try_acquire(model_id, "tsk_early", lease, now=clock.now()), slots.Refused)
    clock.advance(11)

    first = slots.try_acquire(model_id, "tsk_first", lease, now=clock.now())
    second = slots.try_acquire(model_id, "tsk_second", lease, now=clock.now())
    assert first == slots.Held(user_slot=False, probe=True)
    assert second == slots.Refused(model_id, circuit=True)
    # A worker that read the record before the first one's election sends the election itself: refused.
    with pytest.raises(slots.SlotRefused):
        slots._take_one(model_id, slots._model_take("tsk_stale", lease, None, None, probe_at=clock.now()))
    assert set(slots.holders(model_id)) == {"tsk_first"}
