"""The slot semaphore on records as they are found, including ones written before `owners` existed."""

from __future__ import annotations

import time

import boto3
import pytest

from chalicelib.store import slots
from chalicelib.store.records import SlotRecord
from tests.dynamodb_faults import DynamoFaults, transaction_conflict, write_conflict
from tests.slot_helpers import hold_slot

MODEL = "seedream-4.5"


@pytest.fixture
def record_without_owners(aws_resources: None) -> str:
    """The model's slot record as an earlier release wrote it: `holders` and `count` only, one task holding."""
    boto3.client("dynamodb").put_item(
        TableName=SlotRecord.Meta.table_name,
        Item={"model_id": {"S": MODEL}, "holders": {"M": {"tsk_before": {"N": str(int(time.time()) + 60)}}},
              "count": {"N": "1"}},
    )
    return "tsk_before"


def test_a_record_from_before_owners_existed_still_gives_and_takes_slots(record_without_owners: str) -> None:
    assert hold_slot(MODEL, "tsk_after", 2, time.time() + 60, user_id="demo")
    assert not hold_slot(MODEL, "tsk_third", 2, time.time() + 60, user_id="demo")  # full at 2

    assert slots.release(MODEL, record_without_owners) and slots.release(MODEL, "tsk_after", "demo")
    assert slots.in_use(MODEL) == 0


def test_a_record_from_before_owners_existed_works_with_a_per_user_cap(record_without_owners: str) -> None:
    assert hold_slot(MODEL, "tsk_after", 3, time.time() + 60, user_id="demo", user_cap=1)
    assert not hold_slot(MODEL, "tsk_second", 3, time.time() + 60, user_id="demo", user_cap=1)

    assert slots.holders(MODEL)["tsk_after"].user_id == "demo"
    assert slots.release(MODEL, "tsk_after", "demo")
    assert slots.in_use(slots.user_slot_key(MODEL, "demo")) == 0


def test_releasing_a_slot_taken_before_owners_existed_frees_it(record_without_owners: str) -> None:
    assert slots.release(MODEL, record_without_owners, "demo")
    assert slots.in_use(MODEL) == 0 and slots.holders(MODEL) == {}


def test_releasing_what_was_never_held_is_a_no_op(aws_resources: None) -> None:
    assert not slots.release(MODEL, "tsk_nobody", "demo")
    assert slots.in_use(MODEL) == 0


# --- conflicts on real DynamoDB (moto never conflicts) ----------------------------------------------------------


@pytest.fixture
def faults(aws_resources: None, monkeypatch: pytest.MonkeyPatch) -> DynamoFaults:
    return DynamoFaults.installed(monkeypatch)


def test_a_user_capped_acquire_that_meets_a_transaction_conflict_runs_again(faults: DynamoFaults) -> None:
    assert hold_slot(MODEL, "tsk_first", 3, time.time() + 60, user_id="demo", user_cap=2)  # records exist
    faults.add("TransactWriteItems", transaction_conflict(2, 0), times=2)

    assert hold_slot(MODEL, "tsk_second", 3, time.time() + 60, user_id="demo", user_cap=2)
    assert set(slots.holders(MODEL)) == {"tsk_first", "tsk_second"}
    assert slots.in_use(slots.user_slot_key(MODEL, "demo")) == 2


def test_an_acquire_whose_conflicts_outlast_the_retries_takes_nothing_and_says_no_slot(faults: DynamoFaults) -> None:
    assert hold_slot(MODEL, "tsk_first", 3, time.time() + 60, user_id="demo", user_cap=2)
    faults.add("TransactWriteItems", transaction_conflict(2, 1), times=1000)

    assert not hold_slot(MODEL, "tsk_second", 3, time.time() + 60, user_id="demo", user_cap=2)
    assert set(slots.holders(MODEL)) == {"tsk_first"}
    assert slots.in_use(slots.user_slot_key(MODEL, "demo")) == 1


def test_a_release_during_an_acquires_transaction_runs_again(faults: DynamoFaults) -> None:
    assert hold_slot(MODEL, "tsk_first", 3, time.time() + 60, user_id="demo", user_cap=2)
    faults.add("UpdateItem", write_conflict(), times=2)

    assert slots.release(MODEL, "tsk_first", "demo")
    assert slots.in_use(MODEL) == 0 and slots.in_use(slots.user_slot_key(MODEL, "demo")) == 0


def test_a_lease_is_never_shorter_than_asked(aws_resources: None) -> None:
    assert hold_slot(MODEL, "tsk_lease", 3, 1000.2)
    assert slots.holders(MODEL)["tsk_lease"].lease_until == 1001


def test_acquiring_a_slot_the_task_already_holds_extends_its_lease(aws_resources: None) -> None:
    assert hold_slot(MODEL, "tsk_again", 3, 1000)  # a worker that died before its claim
    assert hold_slot(MODEL, "tsk_again", 3, 5000.5, user_id="demo")
    assert slots.holders(MODEL)["tsk_again"].lease_until == 5001
    assert hold_slot(MODEL, "tsk_again", 3, 2000)  # never shortened
    assert slots.holders(MODEL)["tsk_again"].lease_until == 5001 and slots.in_use(MODEL) == 1
