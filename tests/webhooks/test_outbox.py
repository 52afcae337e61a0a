"""No webhook event is lost between a transition's write and its message: the write marks the task, the listener
takes the mark off once the message is queued, and the sweeper queues again what a failed send or a dead Lambda
left marked past the grace, under the same `webhook-id`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.webhooks import events, outbox
from tests.dynamodb_faults import DynamoFaults, internal_server_error, sets_attribute
from tests.factories import DEMO
from tests.webhooks.conftest import Hooks, Receiver, payload

MARK = ("webhook_shard", "webhook_due", "webhook_due_by")


class FailingSqs:
    """The webhook listener's SQS client, refusing every send (and keeping what it was asked to send)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.refused: list[dict[str, Any]] = []

    def send_message(self, **arguments: Any) -> Any:
        self.refused.append(json.loads(arguments["MessageBody"]))
        raise ClientError({"Error": {"Code": "InternalError", "Message": "try again"}}, "SendMessage")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def failing_sends(hooks: Hooks) -> Iterator[FailingSqs]:
    """Every send of the state machine's webhook listener fails while the fixture is on (the sweeper's go through)."""
    events_service = hooks.services.webhook_events
    failing = FailingSqs(events_service.sqs)
    sweeper = hooks.services.sweeper
    sweeper.webhooks = events.WebhookEvents(sqs=events_service.sqs, clock=hooks.clock)
    events_service.sqs = failing
    yield failing
    events_service.sqs = failing._inner


def raw_item(task_id: str) -> dict[str, Any]:
    """The task's item as DynamoDB holds it."""
    return aws.client("dynamodb").get_item(TableName=TaskRecord.Meta.table_name, Key={"task_id": {"S": task_id}},
                                   ConsistentRead=True)["Item"]


def marked(task_id: str) -> bool:
    item = raw_item(task_id)
    present = [name in item for name in MARK]
    assert all(present) or not any(present), item  # the mark is whole or absent
    return all(present)


def sweep_after_grace(hooks: Hooks) -> int:
    hooks.clock.advance(outbox.GRACE_S + 1)
    return hooks.services.sweeper.sweep().webhooks_resent


def ids(receiver: Receiver) -> list[tuple[str, str]]:
    return [(payload(got)["type"], got.headers["webhook-id"]) for got in receiver.received]


def expected_id(task: TaskRecord, status: str) -> str:
    """The event's id as the listener derives it (the task, the status, when the task entered it)."""
    entered = task.started_at if status == statemachine.RUNNING else task.finished_at
    assert entered is not None
    return events.webhook_id(task.task_id, status, entered)


def test_a_failed_send_is_queued_by_the_sweeper_after_the_grace_under_the_same_id(
        hooks: Hooks, receiver: Receiver, failing_sends: FailingSqs) -> None:
    task_id = hooks.create(webhook_url=receiver.url)
    hooks.succeed(task_id)
    [refused] = failing_sends.refused
    assert hooks.messages() == [] and marked(task_id)

    hooks.clock.advance(outbox.GRACE_S - 5)
    assert hooks.services.sweeper.sweep().webhooks_resent == 0  # within the grace: a listener may be sending
    assert sweep_after_grace(hooks) == 1
    assert not marked(task_id)
    hooks.deliver()
    assert ids(receiver) == [("task.succeeded", refused["webhook_id"])]
    assert refused["webhook_id"] == expected_id(hooks.task(task_id), "succeeded")
    assert sweep_after_grace(hooks) == 0 and hooks.deliver() == 0


def test_a_worker_dying_between_the_write_and_the_send_loses_no_event(
        hooks: Hooks, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = hooks.create(webhook_url=receiver.url, webhook_events=["running", "succeeded"])
    monkeypatch.setattr(statemachine, "listeners", [])  # the Lambda ends right after each write
    hooks.succeed(task_id)
    assert hooks.messages() == [] and marked(task_id)

    assert sweep_after_grace(hooks) == 2
    hooks.deliver()
    task = hooks.task(task_id)
    assert ids(receiver) == [("task.running", expected_id(task, "running")),
                             ("task.succeeded", expected_id(task, "succeeded"))]
    assert not marked(task_id)


def test_a_sent_event_takes_its_mark_off_so_the_sweep_sends_nothing(hooks: Hooks, receiver: Receiver) -> None:
    task_id = hooks.create(webhook_url=receiver.url, webhook_events=["running", "succeeded"])
    hooks.succeed(task_id)

    assert not marked(task_id)
    assert sweep_after_grace(hooks) == 0
    assert hooks.deliver() == 2 and [kind for kind, _ in ids(receiver)] == ["task.running", "task.succeeded"]


def test_the_first_of_two_quick_transitions_leaves_the_seconds_mark(
        hooks: Hooks, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, failing_sends: FailingSqs) -> None:
    """`running` and `succeeded` written (by two Lambdas) before `running`'s listener runs: its clear must not take
    off the mark that now covers `succeeded` too, whose own send fails."""
    task_id = hooks.create(webhook_url=receiver.url, webhook_events=["running", "succeeded"])
    monkeypatch.setattr(statemachine, "listeners", [])
    as_running = hooks.start(task_id)  # what the first Lambda's listener is given
    hooks.succeed(task_id)
    succeeded = hooks.task(task_id)

    events_service = hooks.services.webhook_events
    events_service.sqs = failing_sends._inner
    events_service.on_change(as_running)  # sent, but the task was written since: the mark stays
    events_service.sqs = failing_sends
    events_service.on_change(succeeded)  # refused
    assert marked(task_id)

    assert sweep_after_grace(hooks) == 2
    hooks.deliver()
    assert ids(receiver) == [("task.running", expected_id(succeeded, "running")),
                             ("task.succeeded", expected_id(succeeded, "succeeded"))]
    assert not marked(task_id)


def test_a_later_transitions_send_leaves_the_mark_of_an_earlier_failed_one(
        hooks: Hooks, receiver: Receiver, failing_sends: FailingSqs) -> None:
    task_id = hooks.create(webhook_url=receiver.url, webhook_events=["running", "succeeded"])
    hooks.start(task_id)  # its send fails
    hooks.services.webhook_events.sqs = failing_sends._inner
    hooks.clock.advance(1)
    hooks.succeed(task_id)  # sent: but the mark is `running`'s
    assert marked(task_id)

    assert sweep_after_grace(hooks) == 2
    hooks.deliver()
    # `succeeded`, queued twice, is one event: delivered once.
    task = hooks.task(task_id)
    assert sorted(ids(receiver)) == [("task.running", expected_id(task, "running")),
                                     ("task.succeeded", expected_id(task, "succeeded"))]


def test_a_message_sent_again_while_the_first_is_queued_is_one_event(
        hooks: Hooks, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener sent, then its Lambda died before the mark came off: the sweep's copy meets the first one."""
    faults = DynamoFaults.installed(monkeypatch)
    clears_mark = sets_attribute("webhook_due")
    faults.add("UpdateItem", internal_server_error(), when=lambda request: clears_mark(request)
               and str(request["UpdateExpression"]).startswith("REMOVE"))
    task_id = hooks.create(webhook_url=receiver.url)
    hooks.succeed(task_id)
    assert marked(task_id)

    assert sweep_after_grace(hooks) == 1
    assert hooks.deliver() == 2
    assert ids(receiver) == [("task.succeeded", expected_id(hooks.task(task_id), "succeeded"))]


def test_a_sweep_takes_a_page_of_marks(hooks: Hooks, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statemachine, "listeners", [])
    monkeypatch.setattr(outbox, "PAGE", 2)
    task_ids = [hooks.create(webhook_url=receiver.url) for _ in range(3)]
    for task_id in task_ids:
        hooks.succeed(task_id)

    assert sweep_after_grace(hooks) == 2
    assert sweep_after_grace(hooks) == 1
    assert sweep_after_grace(hooks) == 0
    hooks.deliver()
    assert sorted(payload(got)["data"]["id"] for got in receiver.received) == sorted(task_ids)


@pytest.fixture
def dynamodb_writes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every DynamoDB UpdateItem and TransactWriteItems request made while the fixture is on."""
    made: list[dict[str, Any]] = []
    real = BaseClient._make_api_call

    def make_api_call(client: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb" and operation_name in ("UpdateItem",
                                                                                       "TransactWriteItems"):
            made.append(api_params)
        return real(client, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    return made


def test_a_task_without_a_webhook_or_an_unsubscribed_change_carries_no_mark(
        hooks: Hooks, receiver: Receiver, dynamodb_writes: list[dict[str, Any]]) -> None:
    plain = hooks.create()
    running_only = hooks.create(webhook_url=receiver.url, webhook_events=["running"])
    hooks.start(running_only)
    dynamodb_writes.clear()
    hooks.succeed(plain)
    hooks.succeed(running_only)

    assert not marked(plain) and not marked(running_only)
    assert not any(name in json.dumps(request) for request in dynamodb_writes for name in MARK)


@pytest.mark.parametrize("ark_called", [True, False], ids=["one-update", "with-quota-refund"])
def test_the_mark_is_written_with_the_transition_itself(
        hooks: Hooks, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
        dynamodb_writes: list[dict[str, Any]], ark_called: bool) -> None:
    task_id = hooks.create(webhook_url=receiver.url)
    running = hooks.start(task_id)
    statemachine.write_fields(running, [TaskRecord.ark_called.set(ark_called)],
                              condition=TaskRecord.status == statemachine.RUNNING)
    monkeypatch.setattr(statemachine, "listeners", [])
    dynamodb_writes.clear()
    hooks.succeed(task_id)

    # A task ending before any Ark call gives its quota back: its write is a transaction, the task one item of it.
    updates = [item["Update"] for request in dynamodb_writes for item in request.get("TransactItems", [])]
    updates += [request for request in dynamodb_writes if "Key" in request]
    [write] = [update for update in updates if update["Key"] == {"task_id": {"S": task_id}}]
    assert {"status", "webhook_due"} <= set(write["ExpressionAttributeNames"].values())


def test_a_task_deleted_while_marked_leaves_nothing_to_send(
        hooks: Hooks, receiver: Receiver, failing_sends: FailingSqs) -> None:
    task_id = hooks.create(webhook_url=receiver.url)
    hooks.succeed(task_id)
    assert marked(task_id)
    assert hooks.api.request("DELETE", f"/api/tasks/{task_id}", as_user=DEMO).status_code == 200

    assert sweep_after_grace(hooks) == 0
    assert hooks.deliver() == 0 and receiver.received == []
