"""The image lane: claiming, slots, per-user caps, Ark errors, retries and the DLQ."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from chalicelib import aws
from chalicelib.ark.client import VolcImageClient
from chalicelib.ark.errors import ArkError, ArkQuotaExhaustedError
from chalicelib.lanes.messages import Retry
from chalicelib.resources import lane_named
from chalicelib.settings import get_settings
from chalicelib.store import slots
from tests.factories import ADMIN, DEMO, IMAGE_MODEL, IMAGE_TASK, OTHER, user_id_of
from tests.lane_fixtures import ARK_KEY, Lanes, record_for
from tests.slot_helpers import hold_slot

IMAGE_LANE = lane_named("image")


class ImagesCallingBack(VolcImageClient):
    """A real client that runs `during()` while its Ark call is in flight (a second worker, a cancel...)."""

    def __init__(self, base_url: str, during: Any) -> None:
        super().__init__(base_url, ARK_KEY)
        self.during = during
        self.seen: list[Any] = []

    def create_image_task(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(self.during())
        return super().create_image_task(*args, **kwargs)


def test_an_image_task_runs_once_and_stores_urls_and_usage(lanes: Lanes) -> None:
    task_id = lanes.submit({**IMAGE_TASK, "prompt": "two views of a red fox in snow", "max_images": 2})

    assert lanes.run("image") == {"batchItemFailures": []}

    body = lanes.get(task_id)
    assert body["status"] == "succeeded"
    assert len(body["result_urls"]) == 2 and all(url.startswith("http") for url in body["result_urls"])
    assert body["result"]["usage"]["generated_images"] == 2
    assert lanes.ark_calls("images.generate") == 1
    assert slots.in_use(IMAGE_MODEL) == 0
    assert lanes.receive("image") == []  # acknowledged: nothing comes back


def test_duplicate_delivery_while_the_first_is_at_ark_makes_one_call(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    duplicate = record_for(task_id)
    first = lanes.receive_for("image", task_id)
    worker = lanes.worker("image")
    images = ImagesCallingBack(lanes.ark.base_url, lambda: worker.handle([duplicate]))
    worker = lanes.worker("image", image_client=images)

    assert worker.handle([first]) == {"batchItemFailures": []}
    # The duplicate found it claimed and came back for later instead of calling Ark.
    assert images.seen == [{"batchItemFailures": [{"itemIdentifier": duplicate["messageId"]}]}]
    # Once the first finished, the duplicate is simply acknowledged.
    assert worker.handle([record_for(task_id)]) == {"batchItemFailures": []}
    assert lanes.ark_calls("images.generate") == 1
    assert lanes.task(task_id).status == "succeeded"


def test_a_second_delivery_after_success_calls_nothing(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    record = lanes.receive_for("image", task_id)
    worker = lanes.worker("image")
    worker.handle([record, {**record, "messageId": "second-copy"}])
    assert lanes.ark_calls("images.generate") == 1
    assert lanes.task(task_id).version == 4  # queued -> running -> succeeded -> results copied, nothing more


def test_a_batch_acknowledges_both_the_task_that_ran_and_the_one_parked(lanes: Lanes) -> None:
    runs, waits = lanes.submit(IMAGE_TASK, OTHER), lanes.submit(IMAGE_TASK, DEMO)
    lanes.set_model(IMAGE_MODEL, max_running_per_user=1)
    hold_slot(IMAGE_MODEL, "tsk_demo_elsewhere", 4, lanes.clock.now() + 60, user_id=user_id_of(DEMO[0]),
                  user_cap=1)
    records = [lanes.receive_for("image", runs), lanes.receive_for("image", waits)]

    answer = lanes.worker("image").handle(records)

    assert answer == {"batchItemFailures": []}
    assert lanes.task(runs).status == "succeeded"
    assert lanes.task(waits).status == "queued" and lanes.task(waits).parked_model == IMAGE_MODEL


def _task_ids(records: list[dict[str, Any]]) -> list[str]:
    return [json.loads(record["body"])["task_id"] for record in records]


def test_the_per_user_cap_keeps_one_users_burst_from_taking_every_slot(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=3, max_running_per_user=1)
    lease = lanes.clock.now() + 60
    assert hold_slot(IMAGE_MODEL, "tsk_demo_running", 3, lease, user_id=user_id_of(DEMO[0]), user_cap=1)
    demo_task, other_task = lanes.submit(IMAGE_TASK, DEMO), lanes.submit(IMAGE_TASK, OTHER)
    worker = lanes.worker("image")

    assert worker.process(_delivery(lanes.receive_for("image", demo_task))) is None  # parked
    worker.handle([lanes.receive_for("image", other_task)])

    assert lanes.task(demo_task).status == "queued"
    assert lanes.task(other_task).status == "succeeded"
    # Releasing demo's running task frees demo's cap too.
    slots.release(IMAGE_MODEL, "tsk_demo_running", user_id_of(DEMO[0]))
    worker.handle([record_for(demo_task)])
    assert lanes.task(demo_task).status == "succeeded"


@pytest.mark.abuse
def test_a_retryable_error_requeues_with_backoff_and_frees_the_slot(lanes: Lanes) -> None:
    lanes.ark.configure(rate_limit_fraction=1.0, retry_after_s=7)
    task_id = lanes.submit(IMAGE_TASK)
    record = lanes.receive_for("image", task_id)

    outcome = lanes.worker("image").process(_delivery(record))

    assert outcome == Retry(7)  # Ark's Retry-After wins over a shorter backoff
    body = lanes.get(task_id)
    assert body["status"] == "queued" and body["cancellable"] is True
    assert slots.in_use(IMAGE_MODEL) == 0

    lanes.ark.configure(rate_limit_fraction=0.0)
    lanes.worker("image").handle([record_for(task_id, receive_count=2)])
    assert lanes.task(task_id).status == "succeeded"
    assert lanes.ark_calls("images.generate") == 2


@pytest.mark.abuse
def test_backoff_grows_exponentially_with_jitter(lanes: Lanes) -> None:

    lanes.settings = dataclasses.replace(lanes.settings, retry_base_s=2, retry_max_s=300)
    lanes.ark.configure(server_error_fraction=1.0)
    task_id = lanes.submit(IMAGE_TASK)
    delays = [lanes.worker("image").process(_delivery(record_for(task_id, receive_count=count))).delay_s
              for count in (1, 3, 5)]
    assert 1 <= delays[0] <= 2 and 4 <= delays[1] <= 8 and 16 <= delays[2] <= 32


@pytest.mark.abuse
def test_a_permanent_error_fails_the_task_with_arks_code(lanes: Lanes) -> None:
    task_id = lanes.submit({**IMAGE_TASK, "prompt": "a cat SIM_SENSITIVE_INPUT"})

    assert lanes.run("image") == {"batchItemFailures": []}

    error = lanes.get(task_id)["error"]
    assert error["code"] == "InputTextSensitiveContentDetected"
    assert "sensitive" in error["message"]
    assert slots.in_use(IMAGE_MODEL) == 0



@pytest.mark.abuse
def test_a_task_that_only_met_rate_limits_gets_its_quota_request_back(lanes: Lanes) -> None:
    lanes.ark.configure(rate_limit_fraction=1.0, retry_after_s=0)
    task_id = lanes.submit(IMAGE_TASK)
    worker = lanes.worker("image")
    for _ in range(IMAGE_LANE.max_receives):
        worker.handle([lanes.receive_for("image", task_id)])

    assert lanes.get(task_id)["error"]["code"] == "upstream_unavailable"
    assert _used_today(lanes) == 0  # Ark refused every call: nothing was generated


@pytest.mark.abuse
def test_a_task_that_met_a_server_error_keeps_its_quota_request(lanes: Lanes) -> None:
    lanes.ark.configure(server_error_fraction=1.0)  # Ark may have generated it before failing
    task_id = lanes.submit(IMAGE_TASK)
    lanes.worker("image").handle([lanes.receive_for("image", task_id)])
    lanes.ark.configure(server_error_fraction=0.0, rate_limit_fraction=1.0, retry_after_s=0)
    worker = lanes.worker("image")
    for _ in range(IMAGE_LANE.max_receives - 1):
        worker.handle([lanes.receive_for("image", task_id)])

    assert lanes.get(task_id)["error"]["code"] == "upstream_unavailable"
    assert _used_today(lanes) == 1


class RefusingImages(VolcImageClient):
    """Ark refusing every call for good, before any work (retrying cannot help)."""

    def __init__(self, base_url: str, refusal: ArkError) -> None:
        super().__init__(base_url, ARK_KEY)
        self.refusal = refusal

    def create_image_task(self, *args: Any, **kwargs: Any) -> Any:
        raise self.refusal


@pytest.mark.parametrize("refusal", [
    ArkQuotaExhaustedError("SetLimitExceeded", "The spend limit set for this account was reached.", 429),
    ArkQuotaExhaustedError("AccountOverdueError", "The account is overdue.", 403),
])
def test_a_task_ark_refused_for_good_fails_with_arks_code_and_gets_its_quota_request_back(
    lanes: Lanes, refusal: ArkError
) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    lanes.worker("image", image_client=RefusingImages(lanes.ark.base_url, refusal)).handle(
        [lanes.receive_for("image", task_id)])

    assert lanes.get(task_id)["error"]["code"] == refusal.code
    assert _used_today(lanes) == 0 and slots.in_use(IMAGE_MODEL) == 0


def test_a_task_ark_rejected_after_reading_it_keeps_its_quota_request(lanes: Lanes) -> None:
    task_id = lanes.submit({**IMAGE_TASK, "prompt": "a cat SIM_SENSITIVE_INPUT"})
    lanes.run("image")
    assert lanes.get(task_id)["error"]["code"] == "InputTextSensitiveContentDetected"
    assert _used_today(lanes) == 1


def _used_today(lanes: Lanes) -> int:
    from chalicelib import catalog
    from chalicelib.store.records import ModelRecord

    return catalog.usage_today(ModelRecord.get(IMAGE_MODEL), lanes.clock.now(), get_settings().quota_timezone)["used"]


def test_a_task_cancelled_before_its_message_arrives_never_reaches_ark(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    assert lanes.api.request("POST", f"/api/tasks/{task_id}/cancel", as_user=DEMO).status_code == 200
    assert lanes.run("image") == {"batchItemFailures": []}
    assert lanes.ark_calls("images.generate") == 0
    assert slots.in_use(IMAGE_MODEL) == 0


def test_the_lambda_handler_answers_with_batch_item_failures(lanes: Lanes, monkeypatch: Any) -> None:
    from app import app
    from chalicelib import wiring

    wiring.install(lanes.wiring())  # the container's: the lanes' workers (the fixture puts its own back after)
    lanes.set_model(IMAGE_MODEL, max_running_per_user=1)
    hold_slot(IMAGE_MODEL, "tsk_demo_elsewhere", 4, lanes.clock.now() + 60, user_id=user_id_of(DEMO[0]),
                  user_cap=1)
    first, second = lanes.submit(IMAGE_TASK, OTHER), lanes.submit(IMAGE_TASK, DEMO)
    records = [lanes.receive_for("image", first), lanes.receive_for("image", second)]

    answer = app.handler_map[IMAGE_LANE.handler_name]({"Records": records}, None)

    assert answer == {"batchItemFailures": []}  # one ran, the other was parked
    assert lanes.task(second).parked_model == IMAGE_MODEL


def test_queue_position_counts_the_models_queued_tasks_ahead(lanes: Lanes) -> None:
    ids = [lanes.submit(IMAGE_TASK, user) for user in (DEMO, OTHER, DEMO)]
    assert lanes.get(ids[2])["queue_position"] == 3
    lanes.worker("image").handle([lanes.receive_for("image", ids[0])])
    assert lanes.get(ids[2])["queue_position"] == 2
    assert lanes.get(ids[0])["queue_position"] is None
    assert lanes.api.request("GET", f"/api/tasks/{ids[1]}", as_user=ADMIN).status_code == 404


def _queue_url() -> str:
    from chalicelib import queues

    return queues.queue_url(aws.sqs(), "image")


def _delivery(record: dict[str, Any]) -> Any:
    from chalicelib.lanes.messages import Delivery

    return Delivery.of(record)


def test_a_task_whose_worker_died_after_taking_its_slot_runs_on_redelivery(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    task_id = lanes.submit(IMAGE_TASK)
    # The slot is this task's own (taken just before the crash): a full model must not keep it waiting.
    assert hold_slot(IMAGE_MODEL, task_id, 1, lanes.clock.now() + 60)

    assert lanes.worker("image").handle([lanes.receive_for("image", task_id)]) == {"batchItemFailures": []}

    assert lanes.task(task_id).status == "succeeded"
    assert slots.in_use(IMAGE_MODEL) == 0


