"""Every finished task is counted exactly once by the batched roll-up, under any interleaving of endings, roll-up
runs reading the same marks, runs dying between two transactions (or before their first), and deletes (also dying
between their count and the record's removal): a Hypothesis state machine on the real store, in-process moto.

Invariants, after every step: the roll-up items of the model hold exactly the contributions of the tasks whose mark
is gone (counted, or deleted: a delete counts first): counts by status and error code, both histograms bucket by
bucket, costs per currency, the usage rows' requests and outcomes. At the end, after one more run, every finished
task is counted once. With the mark's condition taken out of the batch's transaction, the machine fails
(`test_the_machine_catches_a_roll_up_without_the_marks_condition`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from chalicelib import aws
from chalicelib.clock import iso
from chalicelib.errors import NotFound
from chalicelib.metrics import histogram, rollup
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.tasks.delete import delete_task
from tests.clocks import FrozenClock

# `make test` runs 10 examples of 20 steps (each step ~3 requests to moto, the invariant's 2 among them);
# `make test-deep` (HYPOTHESIS_PROFILE=deep) 300 of 40.
DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
RUNS = 3  # roll-up runs that may be at work at once
USERS = ("u-ana", "u-bo")
ENDINGS = (statemachine.SUCCEEDED, statemachine.FAILED, statemachine.CANCELLED, statemachine.EXPIRED)
_sequence = itertools.count()


class Crash(Exception):
    """The Lambda dies here (its timeout, its container gone)."""


class RollupModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model_id = f"rm-{uuid.uuid4().hex[:10]}"
        self.clock = FrozenClock()
        self.finished: dict[str, TaskRecord] = {}  # every task that ended, as its terminal write left it
        self.reads: dict[int, list[TaskRecord]] = {}  # run -> the marks it read and has not written yet
        self.delete_reads: dict[str, TaskRecord] = {}  # deletes that read their task and have not counted it yet
        self.deleted: set[str] = set()

    # --- the tasks ----------------------------------------------------------------------------------------------

    @rule(status=st.sampled_from(ENDINGS), user=st.sampled_from(USERS), waited=st.floats(0, 900),
          ran=st.one_of(st.none(), st.floats(0, 900)), cost=st.sampled_from([None, ("0.25", "CNY"), ("0.04", "USD")]),
          code=st.sampled_from([None, "timeout", "expired", "upstream_error"]))
    def finish(self, status: str, user: str, waited: float, ran: float | None, cost: tuple[str, str] | None,
               code: str | None) -> None:
        task_id = f"tsk_rm_{next(_sequence):06d}"
        created = self.clock.now()
        task = TaskRecord(task_id, user_id=user, username=user, model_id=self.model_id, type="image",
                          status=statemachine.RUNNING if ran is not None else statemachine.QUEUED,
                          upstream_model="seedream", lane="image", created_at=iso(created), updated_at=iso(created),
                          created_key=f"{iso(created)}#{task_id}", list_shard="0", version=1,
                          started_at=iso(created + waited) if ran is not None else None)
        task.save()
        ended = created + waited + (ran or 0.0)
        actions = [TaskRecord.status.set(status), TaskRecord.finished_at.set(iso(ended)), TaskRecord.version.add(1),
                   *rollup.mark(task, status, ended)]
        if code:
            actions.append(TaskRecord.error.set({"code": code, "message": "it ended"}))
        if cost:
            actions += [TaskRecord.cost.set(float(cost[0])), TaskRecord.currency.set(cost[1])]
        task.update(actions=actions)  # the terminal write, its mark on it
        self.finished[task_id] = task
        self.clock.advance(1)

    # --- roll-up runs -------------------------------------------------------------------------------------------

    @rule(run=st.integers(0, RUNS - 1))
    def run_reads(self, run: int) -> None:
        self.reads[run] = list(rollup.marked())

    @precondition(lambda self: bool(self.reads))
    @rule(data=st.data(), crash_after=st.one_of(st.none(), st.integers(0, 3)))
    def run_writes(self, data: st.DataObject, crash_after: int | None) -> None:
        """A run writes what it read, as many transactions as its batches take, or dies after `crash_after` of
        them."""
        self.write(data.draw(st.sampled_from(sorted(self.reads))), crash_after)

    def write(self, run: int, crash_after: int | None = None) -> None:
        read = self.reads.pop(run)
        with _crashing_after(crash_after):
            rollup.apply_tasks(read, rollup.RollupReport())

    @precondition(lambda self: bool(self.reads))
    @rule(data=st.data())
    def run_dies_before_writing(self, data: st.DataObject) -> None:
        del self.reads[data.draw(st.sampled_from(sorted(self.reads)))]

    # --- deletes ------------------------------------------------------------------------------------------------

    @precondition(lambda self: bool(self._present()))
    @rule(data=st.data())
    def delete_reads(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self._present()))
        self.delete_reads[task_id] = TaskRecord.get(task_id, consistent_read=True)

    @precondition(lambda self: bool(self.delete_reads))
    @rule(data=st.data(), dies_after_its_count=st.booleans())
    def delete_finishes(self, data: st.DataObject, dies_after_its_count: bool) -> None:
        """The delete's count (if the task it read was still marked), then its record's removal, or its death in
        between."""
        task_id = data.draw(st.sampled_from(sorted(self.delete_reads)))
        task = self.delete_reads.pop(task_id)
        if dies_after_its_count:
            if task.metrics_due is not None:
                rollup.apply(task)
            return
        with contextlib.suppress(NotFound):  # another delete won: the owner's 404, nothing more
            delete_task(task, s3=None, bucket="")
            self.deleted.add(task_id)

    def _present(self) -> list[str]:
        return sorted(set(self.finished) - self.deleted)

    # --- what must hold -----------------------------------------------------------------------------------------

    def _counted(self) -> list[TaskRecord]:
        """The finished tasks whose mark is gone: deleted (a delete counts first), or no longer marked."""
        present = set(self.finished) - self.deleted
        marked = set()
        for record in TaskRecord.batch_get(sorted(present), consistent_read=True):
            assert record.metrics_failed is None, record.metrics_failed
            if record.metrics_due is not None:
                marked.add(record.task_id)
        return [task for task_id, task in self.finished.items() if task_id not in marked]

    @invariant()
    def the_figures_hold_exactly_the_counted_tasks(self) -> None:
        counted = self._counted()
        items = _items_of(self.model_id)
        for kind in ("fine", "hour"):
            assert _bucket_figures(items[kind]) == _expected_bucket_figures(counted), kind
        assert _usage_figures(items["usage"]) == _expected_usage_figures(counted)

    def teardown(self) -> None:
        self.reads.clear()
        report = rollup.apply_due()
        assert report.failed == 0
        assert not any(task.task_id in self.finished for task in rollup.marked())
        assert len(self._counted()) == len(self.finished)  # every finished task counted ...
        self.the_figures_hold_exactly_the_counted_tasks()  # ... and once


@pytest.fixture
def small_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Room for two or three tasks per transaction: a run of a few marks writes several, and may die between them.
    monkeypatch.setattr(rollup, "MAX_TRANSACTION_ITEMS", 8)


_transactions_left: list[int | None] = [None]


def _counting_transact(items: list[dict[str, Any]]) -> None:
    left = _transactions_left[0]
    if left is not None:
        if left <= 0:
            raise Crash
        _transactions_left[0] = left - 1
    aws.client("dynamodb").transact_write_items(TransactItems=items)


@contextlib.contextmanager
def _crashing_after(transactions: int | None) -> Iterator[None]:
    """The run dies (`Crash`) at its transaction number `transactions` + 1: what it did not write stays marked."""
    _transactions_left[0] = transactions
    try:
        yield
    except Crash:
        pass
    finally:
        _transactions_left[0] = None


def _items_of(model_id: str) -> dict[str, list[dict[str, Any]]]:
    """The model's roll-up items (the table holds earlier examples' too: filtered at the table, parsed fewer)."""
    found: dict[str, list[dict[str, Any]]] = {"fine": [], "hour": [], "usage": []}
    arguments: dict[str, Any] = {
        "TableName": rollup.table_name(), "FilterExpression": "contains(pk, :model) OR begins_with(sk, :model)",
        "ExpressionAttributeValues": {":model": {"S": model_id}}}
    client = aws.client("dynamodb")
    while True:
        page = client.scan(**arguments)
        for item in page["Items"]:
            kind = item["pk"]["S"].split("#")[0]
            if kind in found:
                found[kind].append(item)
        if "LastEvaluatedKey" not in page:
            return found
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _bucket_figures(items: list[dict[str, Any]]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    costs: Counter[str] = Counter()
    for item in items:
        for name, value in item.items():
            if name.startswith(rollup.COST_PREFIX):
                costs[name] += Decimal(value["N"])
            elif name == "n" or name.startswith(("s:", "e:", "w", "r")):
                counts[name] += int(value["N"])
    return {"counts": counts, "costs": costs}


def _expected_bucket_figures(tasks: list[TaskRecord]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    costs: Counter[str] = Counter()
    for task in tasks:
        part = rollup.contribution_of(task)
        counts["n"] += 1
        counts[f"s:{part.status}"] += 1
        if part.error_code:
            counts[f"e:{part.error_code}"] += 1
        if part.wait_s is not None:
            counts[f"w{histogram.bucket_of(part.wait_s)}"] += 1
            counts[f"r{histogram.bucket_of(part.run_s or 0.0)}"] += 1
        if part.cost is not None:
            costs[rollup.COST_PREFIX + (part.currency or "")] += part.cost
    return {"counts": counts, "costs": costs}


def _usage_figures(items: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    figures: Counter[tuple[str, str]] = Counter()
    for item in items:
        user = item["user_id"]["S"]
        for name in ("requests", "succeeded", "failed"):
            figures[(user, name)] += int(item.get(name, {}).get("N", "0"))
    return +figures


def _expected_usage_figures(tasks: list[TaskRecord]) -> Counter[tuple[str, str]]:
    figures: Counter[tuple[str, str]] = Counter()
    for task in tasks:
        figures[(task.user_id, "requests")] += 1
        if task.status in ("succeeded", "failed"):
            figures[(task.user_id, task.status)] += 1
    return +figures


def _run(machine: type[RuleBasedStateMachine], examples: int, *, shrink: bool = True) -> None:
    phases = tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate)
    run_state_machine_as_test(machine, settings=settings(max_examples=examples, stateful_step_count=40 if DEEP else 20,
                                                         deadline=None, phases=phases))


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rollup, "_transact", _counting_transact)
    yield


@pytest.mark.hypothesis
def test_every_finished_task_is_counted_exactly_once(aws_resources: None, small_transactions: None,
                                                    counting: None) -> None:
    _run(RollupModel, 300 if DEEP else 10)


def test_the_machine_catches_a_roll_up_without_the_marks_condition(
        aws_resources: None, small_transactions: None, counting: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safeguard taken out (a mark's removal that holds whatever the mark now is): two runs that read the same
    marks both count them, and the invariant says so. (A search for it takes minutes when derandomized, so the
    machine is walked through the race itself.)"""
    machine = RollupModel()
    machine.finish(statemachine.SUCCEEDED, USERS[0], 2.0, 5.0, ("0.25", "CNY"), None)
    machine.run_reads(0)
    machine.run_reads(1)
    machine.write(0)
    machine.the_figures_hold_exactly_the_counted_tasks()
    monkeypatch.setattr(rollup, "_mark_condition", lambda task: {})
    machine.write(1)
    with pytest.raises(AssertionError):
        machine.the_figures_hold_exactly_the_counted_tasks()
