"""Lane fixtures: the Ark simulator, workers wired to it, and Lambda-shaped SQS records from the real queues."""

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
from chalicelib import aws, queues
from chalicelib.ark.client import VolcImageClient, VolcVideoClient
from chalicelib.clock import Clock, FrozenClock
from chalicelib.db import TaskRecord
from chalicelib.lanes import LaneWorker
from chalicelib.resources import lane_named
from chalicelib.settings import Settings, get_settings
from chalicelib.sweeper import Sweeper
from chalicelib.video import VideoService
from tests.conftest import ADMIN, DEMO, Api
from tests.dynamodb_faults import DynamoFaults

ARK_KEY = "sk-lanes-test"
IMAGE_MODEL, VIDEO_MODEL = "seedream-4.5", "seedance-1.0-pro"
IMAGE_TASK = {"type": "image", "model_id": IMAGE_MODEL, "prompt": "a red fox in snow"}
VIDEO_TASK = {"type": "video", "model_id": VIDEO_MODEL, "prompt": "waves", "params": {"duration": 2}}
# Nothing listens there: the simulator's own callbacks fail quietly; tests post callbacks themselves.
UNREACHABLE_API = "http://127.0.0.1:9"


@pytest.fixture
def ark() -> Iterator[RunningSimulator]:
    with running_simulator(image_latency_s=0.0, video_queue_s=0.0, video_run_s=0.2, callback_retries=0) as sim:
        yield sim


@dataclasses.dataclass
class Lanes:
    """Workers, video service and sweeper sharing one clock and settings, plus queue helpers."""

    api: Api
    ark: RunningSimulator
    clock: Clock
    settings: Settings

    def worker(self, lane: str, **overrides: Any) -> LaneWorker:
        return LaneWorker(
            lane_named(lane),
            sqs=aws.sqs(),
            s3=aws.s3(),
            images=overrides.pop("images", VolcImageClient(self.ark.base_url, ARK_KEY)),
            videos=overrides.pop("videos", VolcVideoClient(self.ark.base_url, ARK_KEY)),
            settings=self.settings,
            clock=self.clock,
            rng=random.Random(7),
            downloads=overrides.pop("downloads", None),
        )

    def video(self) -> VideoService:
        return VideoService(VolcVideoClient(self.ark.base_url, ARK_KEY), s3=aws.s3(), settings=self.settings,
                            clock=self.clock)

    def sweeper(self) -> Sweeper:
        return Sweeper(sqs=aws.sqs(), video=self.video(), settings=self.settings, clock=self.clock)

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
    return dataclasses.replace(get_settings(), public_api_url=UNREACHABLE_API, retry_base_s=0, slot_wait_s=1)


@pytest.fixture
def frozen_clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def lanes(api: Api, ark: RunningSimulator, lanes_settings: Settings, frozen_clock: FrozenClock,
          monkeypatch: pytest.MonkeyPatch) -> Lanes:
    from chalicelib import video

    # The simulator serves the result files; the workers copy from its origin, as the local stack configures.
    lanes = Lanes(api, ark, frozen_clock, dataclasses.replace(lanes_settings, ark_result_hosts=(ark.root_url,)))
    # The routes (cancel, Ark's callback) talk to this simulator with these settings.
    monkeypatch.setattr(video, "default_service", lanes.video)
    return lanes


@pytest.fixture
def listen() -> Iterator[Callable[[], list[tuple[str, str]]]]:
    """Every published transition as (task id, status)."""
    from chalicelib import statemachine

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
