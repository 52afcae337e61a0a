"""The lanes' fixtures (a pytest plugin of tests/conftest.py): the Ark simulator, a wiring of the app's services on
a frozen clock and the simulator (the app's handlers use it too), and Lambda-shaped SQS records from the queues."""

from __future__ import annotations

import dataclasses
import json
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from arksim.server import RunningSimulator
from arksim.testing import running_simulator
from chalicelib import aws, queues, wiring
from chalicelib.ark.client import VolcImageClient, VolcVideoClient
from chalicelib.clock import Clock
from chalicelib.lanes.worker import LaneWorker
from chalicelib.settings import Settings, get_settings
from chalicelib.store.records import TaskRecord, UserRecord
from chalicelib.sweeper import Sweeper
from chalicelib.video.status import VideoStatus
from chalicelib.video.submit import VideoSubmitter
from chalicelib.wiring import Wiring
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.dynamodb_faults import DynamoFaults
from tests.factories import ADMIN, DEMO, OTHER

ARK_KEY = "sk-lanes-test"
# Nothing listens there: the simulator's own callbacks fail quietly; tests post callbacks themselves.
UNREACHABLE_API = "http://127.0.0.1:9"


@pytest.fixture
def ark() -> Iterator[RunningSimulator]:
    with running_simulator(image_latency_s=0.0, video_queue_s=0.0, video_run_s=0.2, callback_retries=0) as sim:
        yield sim


@dataclasses.dataclass
class Lanes:
    """The app's services wired to the simulator on one clock and settings (`wiring()`), plus queue helpers."""

    api: Api
    ark: RunningSimulator
    clock: Clock
    settings: Settings

    def wiring(self, **overrides: Any) -> Wiring:
        """A fresh wiring of the lanes' settings and clock, the simulator's clients unless `overrides` says."""
        arguments: dict[str, Any] = {
            "clock": self.clock,
            "image_client": VolcImageClient(self.ark.base_url, ARK_KEY),
            "video_client": VolcVideoClient(self.ark.base_url, ARK_KEY),
            "rng_for": lambda _lane: random.Random(7),
            **overrides,
        }
        return Wiring(self.settings, **arguments)

    def worker(self, lane: str, **overrides: Any) -> LaneWorker:
        """A new worker of the lane (`overrides`: `image_client`, `video_client`, `downloads`...)."""
        return self.wiring(**overrides).lane_worker(lane)

    def video_worker(self, submitter: type[VideoSubmitter], **overrides: Any) -> LaneWorker:
        """A new video worker whose Ark creates go through `submitter` (a subclass that dies at some point)."""
        services = self.wiring(**overrides)
        services.video_submitter = submitter(services.video_client, s3=services.s3, status=services.video_status,
                                             settings=services.settings, clock=services.clock)
        return services.lane_worker("video")

    def video(self, **overrides: Any) -> VideoStatus:
        """The poller's and the callback route's service."""
        return self.wiring(**overrides).video_status

    def sweeper(self) -> Sweeper:
        return self.wiring().sweeper

    def submit(self, body: dict[str, Any], user: tuple[str, str] = DEMO) -> str:
        response = self.api.request("POST", "/api/tasks", body, as_user=user)
        assert response.status_code == 201, response.body
        return response.data["id"]

    def receive(self, lane: str, max_messages: int = 10) -> list[dict[str, Any]]:
        """Visible messages as Lambda hands them to the handler."""
        answer = aws.sqs().receive_message(
            QueueUrl=queues.queue_url(aws.sqs(), lane), MaxNumberOfMessages=max_messages,
            AttributeNames=["All"], WaitTimeSeconds=0,
        )
        return [lambda_record(message) for message in answer.get("Messages", [])]

    def receive_for(self, lane: str, task_id: str) -> dict[str, Any]:
        """The visible message of `task_id`; the others received on the way are made visible again."""
        records = self.receive(lane)
        wanted = [record for record in records if json.loads(record["body"])["task_id"] == task_id]
        for record in records:
            if record not in wanted[:1]:
                aws.sqs().change_message_visibility(QueueUrl=queues.queue_url(aws.sqs(), lane),
                                                    ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0)
        assert wanted, f"no visible message for {task_id}"
        return wanted[0]

    def run(self, lane: str, **overrides: Any) -> dict[str, Any]:
        """Hand every visible message of the lane to a worker once; returns its batch answer."""
        return self.worker(lane, **overrides).handle(self.receive(lane))

    def task(self, task_id: str) -> TaskRecord:
        return TaskRecord.get(task_id, consistent_read=True)

    def get(self, task_id: str, user: tuple[str, str] = DEMO) -> dict[str, Any]:
        response = self.api.request("GET", f"/api/tasks/{task_id}", as_user=user)
        assert response.status_code == 200, response.body
        return response.data

    def set_model(self, model_id: str, **changes: Any) -> None:
        response = self.api.request("PUT", f"/api/admin/models/{model_id}", changes, as_user=ADMIN)
        assert response.status_code == 200, response.body

    def ark_calls(self, endpoint: str) -> int:
        return sum(self.ark.stats()["calls"].get(endpoint, {}).values())


def lambda_record(message: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
    return {
        "messageId": message_id or message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {"ApproximateReceiveCount": "1"}),
        "eventSource": "aws:sqs",
    }


def record_for(task_id: str, receive_count: int = 1, receipt_handle: str = "") -> dict[str, Any]:
    """A hand-made record (a duplicate delivery, or one at a given receive count)."""
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": receipt_handle or str(uuid.uuid4()),
        "body": json.dumps({"task_id": task_id}),
        "attributes": {"ApproximateReceiveCount": str(receive_count)},
        "eventSource": "aws:sqs",
    }


@pytest.fixture
def lanes_settings() -> Settings:
    # Circuits open only where a test says (`tests/lanes/test_circuit.py`): these tests retry one task many times.
    return dataclasses.replace(get_settings(), public_api_url=UNREACHABLE_API, retry_base_s=0, slot_wait_s=1,
                               circuit_threshold=1_000_000)


@pytest.fixture
def frozen_clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def lanes(api: Api, ark: RunningSimulator, lanes_settings: Settings, frozen_clock: FrozenClock) -> Iterator[Lanes]:
    # The simulator serves the result files; the workers copy from its origin, as the local stack configures.
    lanes = Lanes(api, ark, frozen_clock, dataclasses.replace(lanes_settings, ark_result_hosts=(ark.root_url,)))
    # Lane tests submit many tasks a minute on the system clock (the routes'): creation's rate limit is not theirs.
    for username, _ in (DEMO, OTHER):
        UserRecord.get(username).update(actions=[UserRecord.requests_per_minute.set(10_000)])
    # The routes and the state machine's listeners run as in a container of the app, but for the video service
    # (cancel, Ark's callback), which talks to this simulator on the lanes' clock and settings.
    routes = Wiring(get_settings())
    routes.video_status = lanes.video()
    wiring.install(routes)
    yield lanes
    wiring.install(None)


@pytest.fixture
def listen() -> Iterator[Callable[[], list[tuple[str, str]]]]:
    """Every published transition as (task id, status)."""
    from chalicelib.store import statemachine

    seen: list[tuple[str, str]] = []

    def listener(task: TaskRecord) -> None:
        seen.append((task.task_id, task.status))

    statemachine.listeners.append(listener)
    yield lambda: seen
    statemachine.listeners.remove(listener)


@pytest.fixture
def dynamodb_faults(monkeypatch: pytest.MonkeyPatch) -> DynamoFaults:
    """DynamoDB errors injected as AWS sends them (`tests.dynamodb_faults`)."""
    return DynamoFaults.installed(monkeypatch)
