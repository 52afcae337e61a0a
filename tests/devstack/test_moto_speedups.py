"""The local stack's moto keeps DynamoDB transactions all-or-nothing while backing up only the items they name."""

from __future__ import annotations

import pytest
from pynamodb.exceptions import TransactWriteError

from chalicelib.store import writes
from chalicelib.store.records import SlotRecord, TaskRecord
from devstack import moto_speedups


@pytest.fixture(autouse=True)
def patched() -> None:
    moto_speedups.install()


def _task(task_id: str) -> TaskRecord:
    now = "2026-12-01T00:00:00Z"
    return TaskRecord(task_id, user_id="u", model_id="m", type="image", status="queued", upstream_model="x",
                      lane="image", created_at=now, updated_at=now, created_key=f"{now}#{task_id}",
                      list_shard="shard-0")


def test_a_cancelled_transaction_leaves_every_item_as_it_was(aws_resources: None) -> None:
    _task("tsk_kept").save()
    SlotRecord("m", count=1, holders={"tsk_kept": 1}, owners={}).save()

    def build(transaction: writes.TransactWrite) -> None:
        transaction.update(TaskRecord("tsk_kept"), actions=[TaskRecord.prompt.set("changed")])  # applied first
        transaction.save(_task("tsk_new"))  # a new item
        transaction.update(SlotRecord("m"), actions=[SlotRecord.count.add(1)],
                           condition=SlotRecord.count > 5)  # false: the whole transaction is cancelled

    with pytest.raises(TransactWriteError):
        writes.write_transaction(build)

    assert TaskRecord.get("tsk_kept", consistent_read=True).prompt is None
    assert TaskRecord.count(hash_key="tsk_new") == 0
    assert SlotRecord.get("m", consistent_read=True).count == 1


def test_index_queries_order_and_filter_as_before(aws_resources: None) -> None:
    # Strings compare as they are; numbers still as numbers (10 > 9), booleans as booleans.
    for task_id, created, version, called in (("tsk_c", "2026-12-01T00:00:03Z", 10, True),
                                              ("tsk_a", "2026-12-01T00:00:01Z", 9, True),
                                              ("tsk_b", "2026-12-01T00:00:02Z", 10, False)):
        task = _task(task_id)
        task.created_key, task.version, task.ark_called, task.parked_model = created, version, called, "m"
        task.save()

    oldest_first = TaskRecord.parked_by_model.query("m", scan_index_forward=True)
    assert [task.task_id for task in oldest_first] == ["tsk_a", "tsk_b", "tsk_c"]
    chosen = TaskRecord.parked_by_model.query("m", filter_condition=(TaskRecord.version > 9)
                                              & (TaskRecord.ark_called == True))  # noqa: E712 - a condition
    assert [task.task_id for task in chosen] == ["tsk_c"]
