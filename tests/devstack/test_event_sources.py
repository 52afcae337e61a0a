"""The local SQS event pump and scheduler drive a Chalice app's handlers the way Lambda would."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from typing import Any

import boto3
import pytest
from chalice import Chalice, Rate

from devstack.moto_server import MotoServer
from devstack.pump import pumping
from devstack.scheduler import scheduling
from tests.polling import wait_for

pytestmark = pytest.mark.stack
REGION = "us-east-1"


@pytest.fixture
def sqs(moto_server: MotoServer) -> Any:
    return boto3.session.Session().client(
        "sqs",
        endpoint_url=moto_server.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def create_queue_with_dlq(sqs: Any, visibility_timeout_s: int = 30, max_receives: int = 5) -> tuple[str, str, str]:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout_s),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}),
        },
    )["QueueUrl"]
    return name, queue_url, dlq_url


def visible_messages(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def test_no_more_handlers_run_at_once_than_the_sources_maximum_concurrency(sqs: Any) -> None:
    queue_name, queue_url, _ = create_queue_with_dlq(sqs)
    app = Chalice(app_name="pump-concurrency")
    release = threading.Event()
    running, most_running, handled = [0], [0], []
    lock = threading.Lock()

    @app.on_sqs_message(queue=queue_name, batch_size=1, maximum_concurrency=2)
    def worker(event: Any) -> None:
        with lock:
            running[0] += 1
            most_running[0] = max(most_running[0], running[0])
        release.wait(timeout=30)
        with lock:
            running[0] -= 1
            handled.extend(record.body for record in event)

    for number in range(5):
        sqs.send_message(QueueUrl=queue_url, MessageBody=f"job-{number}")

    with pumping(app, None, "dev", sqs, REGION):
        wait_for(lambda: running[0] == 2)
        # Both slots are taken, so the pump must have left the other three waiting in the queue.
        assert visible_messages(sqs, queue_url) == 3
        release.set()
        wait_for(lambda: len(handled) == 5)

    assert sorted(handled) == [f"job-{number}" for number in range(5)]
    assert most_running[0] == 2
    assert visible_messages(sqs, queue_url) == 0


def test_reported_batch_item_failures_are_retried_and_end_in_the_dlq(sqs: Any) -> None:
    queue_name, queue_url, dlq_url = create_queue_with_dlq(sqs, visibility_timeout_s=1, max_receives=2)
    app = Chalice(app_name="pump-partial-failures")
    deliveries: Counter[str] = Counter()
    records_seen: list[dict[str, Any]] = []

    @app.on_sqs_message(queue=queue_name, batch_size=10)
    def worker(event: Any) -> dict[str, Any]:
        failures = []
        for record in event:
            deliveries[record.body] += 1
            records_seen.append(record.to_dict())
            if record.body == "poison":
                failures.append({"itemIdentifier": record.to_dict()["messageId"]})
        return {"batchItemFailures": failures}

    sqs.send_message_batch(
        QueueUrl=queue_url,
        Entries=[{"Id": body, "MessageBody": body} for body in ("first", "poison", "second")],
    )

    def dead_letters() -> list[str]:
        messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])
        return [message["Body"] for message in messages]

    with pumping(app, None, "dev", sqs, REGION):
        wait_for(lambda: deliveries["poison"] == 2)
        wait_for(lambda: visible_messages(sqs, queue_url) == 0 and dead_letters() == ["poison"])

    assert deliveries == {"first": 1, "second": 1, "poison": 2}
    assert {record["eventSource"] for record in records_seen} == {"aws:sqs"}
    assert all(record["eventSourceARN"].endswith(f":{queue_name}") for record in records_seen)


def test_a_raising_handler_gets_the_whole_batch_again(sqs: Any) -> None:
    queue_name, queue_url, _ = create_queue_with_dlq(sqs, visibility_timeout_s=1)
    app = Chalice(app_name="pump-raising")
    batches: list[list[str]] = []

    @app.on_sqs_message(queue=queue_name, batch_size=10)
    def worker(event: Any) -> None:
        batches.append(sorted(record.body for record in event))
        if len(batches) == 1:
            raise RuntimeError("first attempt fails")

    sqs.send_message_batch(QueueUrl=queue_url, Entries=[{"Id": body, "MessageBody": body} for body in ("a", "b")])

    with pumping(app, None, "dev", sqs, REGION):
        wait_for(lambda: sum(len(batch) for batch in batches) >= 4)

    assert sorted(body for batch in batches for body in batch) == ["a", "a", "b", "b"]


def test_scheduled_handlers_run_repeatedly_with_scheduled_events() -> None:
    app = Chalice(app_name="scheduler")
    events: list[dict[str, Any]] = []

    @app.schedule(Rate(1, unit=Rate.HOURS))
    def sweeper(event: Any) -> None:
        events.append(event.to_dict())
        if len(events) == 1:
            raise RuntimeError("a failing run does not stop the schedule")

    with scheduling(app, None, "dev", interval_s=0.05, region=REGION):
        wait_for(lambda: len(events) >= 3)

    assert {event["detail-type"] for event in events} == {"Scheduled Event"}
    assert events[0]["resources"] == [f"arn:aws:events:{REGION}:123456789012:rule/sweeper"]
