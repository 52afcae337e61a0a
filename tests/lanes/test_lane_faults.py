"""Faults in the lanes, the poller and the callbacks: nothing lost, nothing doubled, nothing stuck.

In-process against moto and the Ark simulator, on a frozen clock; interleavings are forced deterministically
(a client that runs the competing path while its own Ark call is in flight) instead of hoping threads collide.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from chalicelib import aws, catalog, queues
from chalicelib.ark.client import VolcImageClient, VolcVideoClient
from chalicelib.lanes.messages import Delivery, Retry
from chalicelib.resources import lane_named
from chalicelib.settings import get_settings
from chalicelib.store import slots, statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import ModelRecord, TaskRecord
from chalicelib.video.stages import ARK_QUEUED, ARK_RUNNING, CREATE_GRACE_S, SUBMITTING
from tests.dynamodb_faults import (
    DynamoFaults,
    internal_server_error,
    sets_attribute,
    transaction_conflict,
    updates_attribute,
)
from tests.factories import ADMIN, DEMO, IMAGE_MODEL, IMAGE_TASK, VIDEO_MODEL
from tests.factories import SHORT_VIDEO_TASK as VIDEO_TASK
from tests.lane_fixtures import ARK_KEY, Lanes, record_for
from tests.polling import wait_for
from tests.slot_helpers import hold_slot
from tests.video.test_video_lane import CrashAfterCreate, ark_status, callback_token, crashed_before_the_create

pytestmark = pytest.mark.abuse

ARK_DOWN = {
    "server_error_fraction": 1.0,
    "fault_endpoints": ["images.generate", "tasks.create", "tasks.get", "tasks.list", "tasks.delete"],
}


def statuses_published(listen: Callable[[], list[tuple[str, str]]], task_id: str) -> list[str]:
    return [status for published_id, status in listen() if published_id == task_id]


def used_today(model_id: str, lanes: Lanes) -> int:
    return catalog.usage_today(ModelRecord.get(model_id), lanes.clock.now(), get_settings().quota_timezone)["used"]


@pytest.fixture
def slot_releases() -> Iterator[list[str]]:
    """Task ids, once per slot given back by a transition out of `running`."""
    released: list[str] = []
    releaser = statemachine.slot_releaser[0]

    def count(task: TaskRecord) -> bool:
        gone = releaser(task)
        if gone:
            released.append(task.task_id)
        return gone

    statemachine.slot_releaser[:] = [count]
    yield released
    statemachine.slot_releaser[:] = [releaser]


# --- 1. duplicates ----------------------------------------------------------------------------------------------


def test_two_records_for_one_task_make_one_ark_call_one_transition_and_one_publish_each(
    lanes: Lanes, listen: Callable[[], list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Safeguard: the claim `queued -> running` is conditional on the status and version the worker read.

    A second record reads the task while it is still `queued`; before it claims, the first record's worker
    runs the task to the end. The stale claim must lose, give its slot back and call nothing. Then the same
    record delivered twice more in one batch changes nothing.
    """
    task_id = lanes.submit(IMAGE_TASK)
    original, twin = lanes.receive_for("image", task_id), record_for(task_id)
    real_acquire = slots.try_acquire
    first_worker_answers: list[dict[str, Any]] = []

    def acquire_after_the_first_worker_finished(*args: Any, **kwargs: Any) -> str | None:
        monkeypatch.setattr(slots, "try_acquire", real_acquire)
        first_worker_answers.append(lanes.worker("image").handle([original]))
        return real_acquire(*args, **kwargs)

    monkeypatch.setattr(slots, "try_acquire", acquire_after_the_first_worker_finished)
    assert lanes.worker("image").handle([twin]) == {"batchItemFailures": []}
    again = lanes.worker("image").handle([{**original, "messageId": "copy-1"}, {**original, "messageId": "copy-2"}])

    assert first_worker_answers == [{"batchItemFailures": []}]
    assert again == {"batchItemFailures": []}
    assert lanes.ark_calls("images.generate") == 1
    # Three transitions, then the results copied into the bucket (published, since the URLs change), once.
    assert lanes.task(task_id).status == "succeeded" and lanes.task(task_id).version == 4
    assert statuses_published(listen, task_id) == ["queued", "running", "succeeded", "succeeded"]
    assert slots.in_use(IMAGE_MODEL) == 0


# --- 2. a worker dying after Ark accepted a video ----------------------------------------------------------------


def test_a_worker_dying_after_ark_accepted_a_video_ends_it_with_arks_result_and_one_create(
    lanes: Lanes, listen: Callable[[], list[tuple[str, str]]]
) -> None:
    """Safeguard: a task found `submitting` is reconciled through Ark's task list, never created again."""
    task_id = lanes.submit(VIDEO_TASK)
    record = lanes.receive_for("video", task_id)
    crashing = lanes.video_worker(CrashAfterCreate)
    assert crashing.handle([record]) == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert lanes.task(task_id).stage == SUBMITTING and lanes.task(task_id).external_id is None

    # Redelivered at once: too early to tell a crash from a create still in flight.
    assert len(lanes.worker("video").handle([record_for(task_id, receive_count=2)])["batchItemFailures"]) == 1
    lanes.clock.advance(CREATE_GRACE_S + 1)
    assert lanes.worker("video").handle([record_for(task_id, receive_count=3)]) == {"batchItemFailures": []}
    task = lanes.task(task_id)
    assert lanes.ark_calls("tasks.create") == 1 and task.external_id in lanes.ark.sim.tasks.tasks
    assert task.stage in (ARK_QUEUED, ARK_RUNNING) or task.status == "succeeded"
    external_id = task.external_id
    wait_for(lambda: ark_status(lanes, external_id) == "succeeded")
    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    lanes.video().poll_due(budget_s=10)

    body = lanes.get(task_id)
    assert body["status"] == "succeeded" and body["video_url"]
    assert lanes.ark_calls("tasks.create") == 1 and len(lanes.ark.sim.tasks.tasks) == 1
    assert statuses_published(listen, task_id).count("succeeded") == 1
    assert slots.in_use(VIDEO_MODEL) == 0
    assert used_today(VIDEO_MODEL, lanes) == 1  # Ark did the work: the request stays counted


# --- 4. retryable Ark faults ----------------------------------------------------------------------------------


@pytest.fixture
def resetting_ark() -> Iterator[str]:
    """A base URL whose server accepts each connection and resets it at once (TCP RST, no HTTP answer)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.recv(65536)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/api/v3"
    stopping.set()
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
    listener.close()
    thread.join(timeout=5)


@pytest.mark.parametrize("fault", ["429 without Retry-After", "500", "read timeout", "connection reset"])
def test_a_retryable_ark_fault_requeues_with_backoff_frees_the_slot_and_the_task_completes(
    lanes: Lanes, fault: str, request: pytest.FixtureRequest
) -> None:
    """Safeguard: retryable errors (429, 5xx, timeouts, resets) send the task back to `queued` (slot released)
    and the message back after exponential backoff with jitter; the next delivery completes it."""
    import dataclasses

    lanes.settings = dataclasses.replace(lanes.settings, retry_base_s=2)
    images = VolcImageClient(lanes.ark.base_url, ARK_KEY)
    if fault == "429 without Retry-After":
        lanes.ark.configure(rate_limit_fraction=1.0)
    elif fault == "500":
        lanes.ark.configure(server_error_fraction=1.0)
    elif fault == "read timeout":
        lanes.ark.configure(timeout_fraction=1.0, timeout_hang_s=1.0)
        images = VolcImageClient(lanes.ark.base_url, ARK_KEY, timeout=httpx.Timeout(5.0, read=0.2))
    else:
        images = VolcImageClient(request.getfixturevalue("resetting_ark"), ARK_KEY)
    task_id = lanes.submit(IMAGE_TASK)
    record = lanes.receive_for("image", task_id)

    outcome = lanes.worker("image", image_client=images).process(Delivery.of(record))

    assert isinstance(outcome, Retry) and 1 <= outcome.delay_s <= 2  # first backoff: 2 s, halved by jitter
    assert lanes.get(task_id)["status"] == "queued"
    assert slots.in_use(IMAGE_MODEL) == 0
    lanes.ark.configure(rate_limit_fraction=0.0, server_error_fraction=0.0, timeout_fraction=0.0)
    assert lanes.worker("image").handle([record_for(task_id, receive_count=2)]) == {"batchItemFailures": []}
    assert lanes.task(task_id).status == "succeeded"
    assert slots.in_use(IMAGE_MODEL) == 0


# --- 5. Ark down for longer than the receive budget ------------------------------------------------------------


def deliver_like_lambda(lanes: Lanes, lane: str, task_id: str, attempts: int) -> int:
    """Hand the task's message to a worker until SQS stops delivering it; returns how many deliveries ran.

    Acknowledged messages are deleted, given-back ones made visible again at once (the backoff has passed),
    and the clock moves past the create grace between deliveries.
    """
    url = queues.queue_url(aws.sqs(), lane)
    deliveries = 0
    for _ in range(attempts):
        answer = aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
        mine = [message for message in answer.get("Messages", []) if task_id in message["Body"]]
        if not mine:
            return deliveries
        message = mine[0]
        record = {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                  "body": message["Body"], "attributes": message["Attributes"], "eventSource": "aws:sqs"}
        failures = lanes.worker(lane).handle([record])["batchItemFailures"]
        deliveries += 1
        if failures:
            aws.sqs().change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                                VisibilityTimeout=0)
        else:
            aws.sqs().delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        lanes.clock.advance(CREATE_GRACE_S + 1)
    return deliveries


def dead_letters(lanes: Lanes, lane: str) -> list[str]:
    url = aws.sqs().get_queue_url(QueueName=lane_named(lane).dlq_name(lanes.settings.resource_prefix))["QueueUrl"]
    return [json.loads(message["Body"])["task_id"]
            for message in aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]


@pytest.mark.parametrize(("lane", "body", "model_id"), [("image", IMAGE_TASK, IMAGE_MODEL),
                                                       ("video", VIDEO_TASK, VIDEO_MODEL)])
def test_ark_down_past_the_receive_budget_fails_the_task_and_dead_letters_its_message(
    lanes: Lanes, lane: str, body: dict[str, Any], model_id: str
) -> None:
    """Safeguard: every retryable failure counts towards the lane's `max_receives`; on the last receive the task
    fails with `upstream_unavailable` (slot released; the request stays counted, since Ark was called) and the
    message goes to the DLQ. Nothing stays `running`."""
    lanes.ark.configure(**ARK_DOWN)
    task_id = lanes.submit(body)
    max_receives = lane_named(lane).max_receives

    deliveries = deliver_like_lambda(lanes, lane, task_id, attempts=3 * max_receives)

    assert deliveries == max_receives
    if lane == "image":  # each receive called Ark once (a video's later receives look for its create instead)
        assert lanes.ark_calls("images.generate") == max_receives
    task = lanes.get(task_id)
    assert task["status"] == "failed" and task["error"]["code"] == "upstream_unavailable"
    assert "InternalServiceError" in task["error"]["message"]  # Ark's last answer, named
    assert dead_letters(lanes, lane) == [task_id]
    assert slots.in_use(model_id) == 0
    assert used_today(model_id, lanes) == 1
    assert lanes.api.request("GET", "/api/admin/tasks?status=running", as_user=ADMIN).data["tasks"] == []


# --- 7. poison records ---------------------------------------------------------------------------------------


def test_a_poison_record_fails_alone_and_the_rest_of_its_batch_is_processed(lanes: Lanes) -> None:
    """Safeguard: each record of a batch is parsed and processed on its own; only unreadable ones are reported
    as batch item failures (so they alone are retried and end in the DLQ)."""
    good = lanes.submit(IMAGE_TASK)
    bad_json = {**record_for(good), "body": "{not json"}
    no_task_id = {**record_for(good), "body": json.dumps({"task": good})}
    unknown_task = record_for("tsk_nobodyknowsthisone")

    answer = lanes.worker("image").handle([bad_json, unknown_task, lanes.receive_for("image", good), no_task_id])

    assert sorted(failure["itemIdentifier"] for failure in answer["batchItemFailures"]) == sorted(
        [bad_json["messageId"], no_task_id["messageId"]]
    )
    assert lanes.task(good).status == "succeeded"
    assert lanes.ark_calls("images.generate") == 1


# --- 8. callback racing the poller ------------------------------------------------------------------------------


class ClientRunningDuringFirstRead(VolcVideoClient):
    """Runs `during()` while its first status read is at Ark (a callback or another poller getting in first)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, ARK_KEY)
        self.during: Callable[[], Any] = lambda: None
        self.reads = 0

    def get_task_status(self, task_id: str) -> Any:
        self.reads += 1
        if self.reads == 1:
            self.during()
        return super().get_task_status(task_id)


def test_a_callback_landing_while_the_poller_reads_ark_ends_the_task_once(
    lanes: Lanes, listen: Callable[[], list[tuple[str, str]]], slot_releases: list[str]
) -> None:
    """Safeguard: terminal writes are conditional on the version read, so of the poller and the callback only
    one ends the task: one terminal write, one publish, one slot release, the request counted once."""
    task_id = lanes.submit(VIDEO_TASK)
    lanes.run("video")
    external_id = lanes.task(task_id).external_id
    wait_for(lambda: ark_status(lanes, external_id) == "succeeded")
    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    client = ClientRunningDuringFirstRead(lanes.ark.base_url)
    poller = lanes.video(video_client=client)
    callbacks: list[Any] = []
    client.during = lambda: callbacks.append(lanes.api.request(
        "POST", f"/api/queue/callback?task_id={task_id}&token={callback_token(lanes, task_id)}",
        lanes.ark.sim.tasks.tasks[external_id].to_wire()))

    seen_before = lanes.task(task_id)
    assert poller.poll_due(budget_s=10) == 0  # the callback got in first: the poller's write lost
    assert [response.status_code for response in callbacks] == [200]
    # A poll of the task as read before the callback ended it loses too, and nothing is due any more.
    with pytest.raises(StaleTask):
        lanes.video().poll(seen_before)
    assert lanes.video().poll_due(budget_s=10) == 0
    task = lanes.task(task_id)
    assert task.status == "succeeded" and task.version == 4  # queued, running, ark_queued, succeeded
    assert statuses_published(listen, task_id).count("succeeded") == 1
    assert slot_releases == [task_id]
    assert used_today(VIDEO_MODEL, lanes) == 1


# --- 9. overlapping poller runs ---------------------------------------------------------------------------------


def test_overlapping_poller_runs_read_each_task_at_most_once_per_interval(lanes: Lanes) -> None:
    """Safeguard: a poller run claims a due task (moving `next_poll_at` conditionally) before reading Ark, so a
    second run started meanwhile (EventBridge delivers at least once) finds it not due."""
    lanes.ark.configure(video_run_s=3600)
    task_id = lanes.submit(VIDEO_TASK)
    lanes.run("video")
    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    client = ClientRunningDuringFirstRead(lanes.ark.base_url)
    first_run = lanes.video(video_client=client)
    second_run = lanes.video()
    client.during = lambda: second_run.poll_due(budget_s=10)

    first_run.poll_due(budget_s=10)

    assert lanes.ark_calls("tasks.get") == 1
    assert lanes.task(task_id).status == "running"


# --- 11. concurrency changed while tasks run --------------------------------------------------------------------


def test_a_concurrency_changed_mid_run_applies_to_the_next_acquire(lanes: Lanes) -> None:
    """Safeguard: the slot semaphore reads the model's concurrency live on every acquire (`count < limit`): once
    lowered, nothing starts until in-flight drops below it; once raised, the next task starts."""
    lanes.set_model(IMAGE_MODEL, concurrency=3)
    waiting = lanes.submit(IMAGE_TASK)  # accepted while slots were free: it has its message
    record = lanes.receive_for("image", waiting)
    running = ["tsk_running_a", "tsk_running_b", "tsk_running_c"]
    for holder in running:
        assert hold_slot(IMAGE_MODEL, holder, 3, lanes.clock.now() + 600)
    lanes.set_model(IMAGE_MODEL, concurrency=1)

    for finished in running:
        assert lanes.worker("image").process(Delivery.of(record)) is None, f"{slots.in_use(IMAGE_MODEL)}"  # parked
        assert lanes.task(waiting).status == "queued" and lanes.task(waiting).parked_model == IMAGE_MODEL
        slots.release(IMAGE_MODEL, finished)

    assert lanes.worker("image").handle([record]) == {"batchItemFailures": []}
    assert lanes.task(waiting).status == "succeeded"
    assert lanes.ark_calls("images.generate") == 1

    raised = lanes.submit(IMAGE_TASK)
    assert hold_slot(IMAGE_MODEL, "tsk_running_elsewhere", 1, lanes.clock.now() + 600)
    lanes.set_model(IMAGE_MODEL, concurrency=3)
    assert lanes.worker("image").handle([lanes.receive_for("image", raised)]) == {"batchItemFailures": []}
    assert lanes.task(raised).status == "succeeded"
    assert lanes.ark.stats()["max_in_flight"]["doubao-seedream-4-5-251128"] == 1


# --- 12. DynamoDB errors that are not lost races ------------------------------------------------------------


def test_a_failed_write_of_arks_id_never_cancels_the_video_just_created(
    lanes: Lanes, dynamodb_faults: DynamoFaults
) -> None:
    """Safeguard: only a false condition is a lost race. Any other failure to record Ark's id brings the message
    back, and the reconcile adopts the Ark task the create made: one create, nothing cancelled."""
    lanes.ark.configure(video_queue_s=600)
    task_id = lanes.submit(VIDEO_TASK)
    record = lanes.receive_for("video", task_id)
    dynamodb_faults.add("TransactWriteItems", internal_server_error(), when=updates_attribute("external_id"))

    assert lanes.worker("video").handle([record]) == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    created = next(iter(lanes.ark.sim.tasks.tasks))
    assert ark_status(lanes, created) == "queued" and lanes.task(task_id).stage == "submitting"

    lanes.clock.advance(CREATE_GRACE_S + 1)
    assert lanes.worker("video").handle([record_for(task_id, receive_count=2)]) == {"batchItemFailures": []}

    task = lanes.task(task_id)
    assert (task.status, task.stage, task.external_id) == ("running", "ark_queued", created)
    assert ark_status(lanes, created) == "queued" and lanes.ark_calls("tasks.create") == 1


def test_a_failed_write_of_a_results_copy_keeps_the_copies_and_comes_back(
    lanes: Lanes, dynamodb_faults: DynamoFaults
) -> None:
    """Safeguard: a results copy whose record fails for any reason but a deleted task keeps what it stored and
    is not acknowledged; its next delivery records the copies."""
    task_id = lanes.submit(IMAGE_TASK)
    record = lanes.receive_for("image", task_id)
    dynamodb_faults.add("UpdateItem", internal_server_error(), when=sets_attribute("results_copy_error"))

    assert lanes.worker("image").handle([record]) == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    bucket = lanes.settings.media_bucket
    kept = aws.s3().list_objects_v2(Bucket=bucket, Prefix=f"tasks/{task_id}/").get("KeyCount", 0)
    assert kept == 1 and lanes.task(task_id).status == "succeeded"

    assert lanes.worker("image").handle([record_for(task_id, receive_count=2)]) == {"batchItemFailures": []}
    task = lanes.task(task_id)
    assert task.results_copy_error is None and all(url.startswith("s3://") for url in task.result_urls)
    assert lanes.ark_calls("images.generate") == 1


def test_a_failed_write_of_a_reconcile_round_brings_the_message_back(
    lanes: Lanes, dynamodb_faults: DynamoFaults
) -> None:
    task_id = crashed_before_the_create(lanes, VIDEO_TASK)
    lanes.clock.advance(CREATE_GRACE_S + 1)
    dynamodb_faults.add("UpdateItem", internal_server_error(), when=sets_attribute("create_attempt"))

    redelivered = record_for(task_id, receive_count=2)
    assert lanes.worker("video").handle([redelivered])["batchItemFailures"] == [
        {"itemIdentifier": redelivered["messageId"]}]
    assert lanes.worker("video").handle([record_for(task_id, receive_count=3)]) == {"batchItemFailures": []}
    assert lanes.task(task_id).stage == "ark_queued" and lanes.ark_calls("tasks.create") == 1


def test_a_failed_write_in_one_task_does_not_stop_the_sweep(lanes: Lanes, dynamodb_faults: DynamoFaults) -> None:
    first, second = lanes.submit(IMAGE_TASK), lanes.submit(IMAGE_TASK)
    lanes.clock.advance(lanes.settings.task_deadline_s + 60)
    dynamodb_faults.add("TransactWriteItems", internal_server_error())  # the first timeout's refund

    assert lanes.sweeper().sweep().timed_out == 1
    assert sorted(lanes.task(task_id).status for task_id in (first, second)) == ["failed", "queued"]
    assert lanes.sweeper().sweep().timed_out == 1  # the next sweep ends the other
    assert used_today(IMAGE_MODEL, lanes) == 0


# --- 13. transaction conflicts on real DynamoDB ---------------------------------------------------------------

# A create's transaction: the model's condition check, the task, the model's quota counter.
CREATE_ITEMS, QUOTA_ITEM = 3, 2


def test_creates_that_meet_transaction_conflicts_on_the_quota_counter_are_all_accepted(
    lanes: Lanes, dynamodb_faults: DynamoFaults
) -> None:
    """Safeguard: a transaction cancelled by a conflict wrote nothing, so intake runs it again (jittered)."""
    lanes.set_model(IMAGE_MODEL, daily_quota=3)
    statuses = []
    for _ in range(3):  # each create meets two conflicts (a burst of parallel creates for the model) first
        dynamodb_faults.add("TransactWriteItems", transaction_conflict(CREATE_ITEMS, QUOTA_ITEM), times=2)
        statuses.append(lanes.api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).status_code)

    assert statuses == [201, 201, 201] and used_today(IMAGE_MODEL, lanes) == 3
    assert lanes.api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).status_code == 429


def test_a_create_whose_conflicts_outlast_the_retries_answers_503_and_writes_nothing(
    lanes: Lanes, dynamodb_faults: DynamoFaults
) -> None:
    dynamodb_faults.add("TransactWriteItems", transaction_conflict(CREATE_ITEMS, QUOTA_ITEM), times=1000)

    response = lanes.api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO)

    assert response.status_code == 503 and response.data["error"]["code"] == "unavailable"
    assert response.headers.get("Retry-After")
    assert used_today(IMAGE_MODEL, lanes) == 0 and lanes.receive("image") == []


def test_a_refund_that_meets_a_conflict_on_the_quota_counter_runs_again(
    lanes: Lanes, dynamodb_faults: DynamoFaults
) -> None:
    """Safeguard: the refund's transaction (task and counter) runs again after a conflict, so a task that never
    reached Ark is not left queued past its deadline with its quota spent."""
    task_id = lanes.submit(IMAGE_TASK)
    lanes.clock.advance(lanes.settings.task_deadline_s + 60)
    dynamodb_faults.add("TransactWriteItems", transaction_conflict(2, 1))

    assert lanes.sweeper().sweep().timed_out == 1
    assert lanes.task(task_id).status == "failed" and used_today(IMAGE_MODEL, lanes) == 0


def test_a_refund_whose_conflicts_outlast_the_retries_answers_503_and_changes_nothing(
    lanes: Lanes, dynamodb_faults: DynamoFaults
) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    dynamodb_faults.add("TransactWriteItems", transaction_conflict(2, 1), times=1000)

    response = lanes.api.request("POST", f"/api/tasks/{task_id}/cancel", as_user=DEMO)

    assert response.status_code == 503 and response.data["error"]["code"] == "unavailable"
    assert lanes.task(task_id).status == "queued" and used_today(IMAGE_MODEL, lanes) == 1
