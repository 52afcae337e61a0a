"""Delivering a task's webhooks: one event per transition it subscribes to, signed, retried with backoff for a day
on what may pass (no answer, 5xx, 429 and its Retry-After) under the same `webhook-id`, never retried on another
4xx, and every attempt listed to the task's owner only."""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from chalicelib import aws, queues
from chalicelib.errors import error_object
from chalicelib.media import results, storage
from chalicelib.resources import WEBHOOK_DELIVERY
from chalicelib.settings import get_settings
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.webhooks import delivery
from chalicelib.webhooks.sender import WebhookSender
from tests.factories import DEMO, OTHER
from tests.webhooks.conftest import Hooks, Receiver, payload


def test_a_receiver_failing_twice_gets_the_same_event_three_times_each_freshly_signed(
        hooks: Hooks, receiver: Receiver) -> None:
    receiver.answer(500, 503)
    task_id = hooks.create(webhook_url=receiver.url)
    hooks.succeed(task_id)

    assert hooks.deliver() == 3
    secret = hooks.secret()
    assert [Webhook(secret).verify(got.body, got.headers)["type"] for got in receiver.received] == \
        ["task.succeeded"] * 3
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 1
    timestamps = [int(got.headers["webhook-timestamp"]) for got in receiver.received]
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == 3
    # The payload is made at each attempt: the task as the API shows it then, its result freshly presigned.
    bodies = [payload(got) for got in receiver.received]
    assert {body["timestamp"] for body in bodies} == {hooks.task(task_id).finished_at}
    assert all(body["data"]["id"] == task_id and body["data"]["status"] == "succeeded" for body in bodies)
    assert all(body["data"]["result_urls"][0].startswith("https://") and "X-Amz-Signature" in
               body["data"]["result_urls"][0] for body in bodies)

    listed = hooks.deliveries(task_id).data["deliveries"]
    assert [(row["attempt"], row["status_code"], row["outcome"]) for row in listed] == [
        (1, 500, "retrying"), (2, 503, "retrying"), (3, 204, "delivered")]
    assert all(row["duration_ms"] >= 0 and row["at"] for row in listed)
    assert listed[0]["error"].startswith("answered 500") and listed[2]["error"] is None


def test_backoff_grows_with_jitter_and_a_retry_after_is_honoured(hooks: Hooks, receiver: Receiver) -> None:
    receiver.answer((429, {"Retry-After": "120"}), 500, 500)
    hooks.succeed(hooks.create(webhook_url=receiver.url))

    hooks.deliver()
    retries = [int(got.headers["webhook-timestamp"]) for got in receiver.received]
    gaps = [later - earlier for earlier, later in itertools.pairwise(retries)]
    assert gaps[0] >= 120  # what the 429 asked, though the backoff's first step is shorter
    low, high = delivery.RETRY_SPREAD
    assert delivery.RETRY_BASE_S * 2 * low - 1 <= gaps[1] <= delivery.RETRY_BASE_S * 2 * high + 1
    assert delivery.RETRY_BASE_S * 4 * low - 1 <= gaps[2] <= delivery.RETRY_BASE_S * 4 * high + 1


@pytest.mark.parametrize("status", [400, 401, 404, 410, 413, 302])
def test_other_client_errors_and_redirects_are_not_retried(hooks: Hooks, receiver: Receiver, status: int) -> None:
    receiver.answer((status, {"Location": "http://127.0.0.1:9/elsewhere"}, b"gone for good"))
    task_id = hooks.create(webhook_url=receiver.url)
    hooks.succeed(task_id)

    assert hooks.deliver() == 1
    assert len(receiver.received) == 1
    [row] = hooks.deliveries(task_id).data["deliveries"]
    assert (row["status_code"], row["outcome"]) == (status, "failed")
    assert str(status) in row["error"]


def test_retries_go_on_for_a_day_then_the_event_is_given_up(hooks: Hooks, receiver: Receiver) -> None:
    receiver.answer(*[502] * 100)
    task_id = hooks.create(webhook_url=receiver.url)
    hooks.succeed(task_id)

    hooks.deliver()
    rows = delivery.attempts_of(task_id)  # what the listing shows (the clock is past the session's lifetime)
    first, last = (int(receiver.received[index].headers["webhook-timestamp"]) for index in (0, -1))
    assert last - first >= delivery.RETRY_WINDOW_S
    assert len(rows) == len(receiver.received) < delivery.MAX_ATTEMPTS
    assert [row.outcome for row in rows] == ["retrying"] * (len(rows) - 1) + ["failed"]
    # SQS delays a message 15 minutes at most: longer waits went as several hops.
    assert max(hooks.sqs.delays) == 900


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    for connection in accepted:
        connection.close()


def test_no_answer_in_time_is_retried(hooks: Hooks, silent_server: int) -> None:
    hooks.services.webhook_delivery.sender = WebhookSender(allow_loopback=True, total_s=0.3)
    task_id = hooks.create(webhook_url=f"http://127.0.0.1:{silent_server}/hook")
    hooks.succeed(task_id)
    [record] = hooks.messages()

    hooks.services.webhook_delivery.handle([record])
    [row] = hooks.deliveries(task_id).data["deliveries"]
    assert (row["status_code"], row["outcome"]) == (None, "retrying")
    assert "no answer" in row["error"]


def test_a_refused_connection_is_retried(hooks: Hooks) -> None:
    task_id = hooks.create(webhook_url="http://127.0.0.1:9/nothing-listens")
    hooks.succeed(task_id)
    [record] = hooks.messages()

    hooks.services.webhook_delivery.handle([record])
    [row] = hooks.deliveries(task_id).data["deliveries"]
    assert (row["status_code"], row["outcome"]) == (None, "retrying")
    assert "could not connect" in row["error"]


def test_only_the_events_asked_for_are_sent(hooks: Hooks, receiver: Receiver) -> None:
    running_only = hooks.create(webhook_url=receiver.url, webhook_events=["running"])
    hooks.succeed(running_only)
    default = hooks.create(webhook_url=receiver.url)
    assert hooks.api.request("POST", f"/api/tasks/{default}/cancel", as_user=DEMO).status_code == 200
    none = hooks.create()
    hooks.succeed(none)

    hooks.deliver()
    assert sorted((payload(got)["data"]["id"], payload(got)["type"]) for got in receiver.received) == sorted(
        [(running_only, "task.running"), (default, "task.cancelled")])


def test_a_duplicate_notification_or_redelivery_makes_no_second_event(hooks: Hooks, receiver: Receiver) -> None:
    task_id = hooks.create(webhook_url=receiver.url)
    task = hooks.succeed(task_id)
    hooks.clock.advance(2)
    statemachine.notify(task)  # the same transition told again, later
    [first, duplicate] = hooks.messages()
    assert json.loads(first["body"])["webhook_id"] == json.loads(duplicate["body"])["webhook_id"]

    worker = hooks.services.webhook_delivery
    worker.handle([first])
    worker.handle([duplicate])
    worker.handle([duplicate])
    assert len(receiver.received) == 1
    # A redelivery of a message whose handler died before it was deleted is tried again (at least once).
    worker.handle([first])
    assert len(receiver.received) == 2
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 1


def test_a_later_change_of_the_same_status_is_no_new_event(hooks: Hooks, receiver: Receiver) -> None:
    task = hooks.succeed(hooks.create(webhook_url=receiver.url))
    hooks.clock.advance(5)
    statemachine.update_fields(task, [], publish=True, clock=hooks.clock)  # e.g. its results copied

    assert len(hooks.messages()) == 1


def test_a_task_running_again_is_a_new_running_event(hooks: Hooks, receiver: Receiver) -> None:
    task_id = hooks.create(webhook_url=receiver.url, webhook_events=["running"])
    task = hooks.start(task_id)
    hooks.clock.advance(1)
    statemachine.transition(task, statemachine.QUEUED, clock=hooks.clock)  # Ark's retryable error
    hooks.clock.advance(1)
    hooks.start(task_id)

    hooks.deliver()
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 2


def test_deliveries_are_listed_to_the_tasks_owner_only(hooks: Hooks, receiver: Receiver) -> None:
    task_id = hooks.create(webhook_url=receiver.url)
    hooks.succeed(task_id)
    hooks.deliver()

    assert len(hooks.deliveries(task_id).data["deliveries"]) == 1
    other = hooks.deliveries(task_id, user=OTHER)
    assert other.status_code == 404 and other.data["error"]["code"] == "task_not_found"
    missing = hooks.api.request("GET", "/api/webhooks/deliveries", as_user=DEMO)
    assert missing.status_code == 400 and missing.data["error"]["details"][0]["field"] == "task_id"
    malformed = hooks.deliveries("../tasks")
    assert malformed.status_code == 400
    assert hooks.api.request("GET", f"/api/webhooks/deliveries?task_id={task_id}").status_code == 401
    assert hooks.deliveries(hooks.create()).data["deliveries"] == []


def test_a_task_deleted_before_its_webhook_is_recorded_as_failed(hooks: Hooks, receiver: Receiver) -> None:
    task_id = hooks.create(webhook_url=receiver.url)
    hooks.succeed(task_id)
    assert hooks.api.request("DELETE", f"/api/tasks/{task_id}", as_user=DEMO).status_code == 200

    assert hooks.deliver() == 1
    assert receiver.received == []


ARK_RESULT = "https://ark-results.example.com/image-0.jpeg"


def succeed_at_ark(hooks: Hooks, task_id: str, *more: Any) -> None:
    """Succeed the task as the lane does: with Ark's URL, which it copies into the bucket right after."""
    statemachine.transition(hooks.start(task_id), statemachine.SUCCEEDED,
                            actions=[TaskRecord.result_urls.set([ARK_RESULT]), *more], clock=hooks.clock)


def test_a_succeeded_webhook_waits_for_the_results_copy_and_carries_its_presigned_url(
        hooks: Hooks, receiver: Receiver) -> None:
    task_id = hooks.create(webhook_url=receiver.url)
    succeed_at_ark(hooks, task_id)
    for record in hooks.messages():  # due now; the copy has not run yet
        assert hooks.services.webhook_delivery.handle([record]) == {"batchItemFailures": []}
        aws.sqs().delete_message(QueueUrl=queues.url_of(aws.sqs(), WEBHOOK_DELIVERY),
                                 ReceiptHandle=record["receiptHandle"])
    assert receiver.received == [] and hooks.deliveries(task_id).data["deliveries"] == []

    ref = storage.store_bytes(aws.s3(), get_settings().media_bucket, f"tasks/{task_id}/results/image-0.jpg",
                              b"\xff\xd8jpeg", "image/jpeg")
    hooks.task(task_id).update(actions=[TaskRecord.result_urls.set([ref])])
    assert hooks.deliver() >= 1
    [got] = receiver.received
    [url] = payload(got)["data"]["result_urls"]
    assert "X-Amz-Signature" in url and not url.startswith(ARK_RESULT)
    assert [row["outcome"] for row in hooks.deliveries(task_id).data["deliveries"]] == ["delivered"]


@pytest.mark.parametrize("copy_error", [False, True])
def test_a_copy_that_fails_or_never_comes_leaves_the_webhook_with_arks_url(
        hooks: Hooks, receiver: Receiver, copy_error: bool) -> None:
    task_id = hooks.create(webhook_url=receiver.url)
    started = hooks.clock.now()
    failed = TaskRecord.results_copy_error.set(error_object(results.COPY_FAILED, "could not copy"))
    succeed_at_ark(hooks, task_id, *([failed] if copy_error else []))

    hooks.deliver()
    [got] = receiver.received
    assert payload(got)["data"]["result_urls"] == [ARK_RESULT]
    waited = hooks.clock.now() - started
    assert waited < delivery.COPY_POLL_S if copy_error else delivery.COPY_WAIT_S <= waited < delivery.COPY_WAIT_S + 10
