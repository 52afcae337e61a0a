"""The image lane: claiming, slots, per-user caps, Ark errors, retries and the DLQ."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.ark.client import VolcImageClient
from chalicelib.ark.errors import ArkError, ArkQuotaExhaustedError
from chalicelib.lanes.messages import Retry
from chalicelib.lanes.waits import Waker
from chalicelib.resources import lane_named
from chalicelib.settings import get_settings
from chalicelib.store import slots
from chalicelib.store.records import TaskRecord
from tests.factories import ADMIN, DEMO, IMAGE_MODEL, IMAGE_TASK, OTHER, user_id_of
from tests.lane_fixtures import ARK_KEY, Lanes, record_for

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


def test_no_free_slot_defers_the_message_briefly_then_it_runs(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    slots.acquire(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    task_id = lanes.submit(IMAGE_TASK)
    record = lanes.receive_for("image", task_id)

    outcome = lanes.worker("image").process(_delivery(record))

    assert isinstance(outcome, Retry) and 1 <= outcome.delay_s <= 2
    assert lanes.get(task_id)["status"] == "queued"
    assert lanes.get(task_id)["queue_position"] == 1
    assert lanes.ark_calls("images.generate") == 0

    slots.release(IMAGE_MODEL, "tsk_elsewhere")
    lanes.worker("image").handle([record])
    assert lanes.task(task_id).status == "succeeded"


def test_the_batch_answer_names_only_the_deferred_message(lanes: Lanes) -> None:
    runs, waits = lanes.submit(IMAGE_TASK, OTHER), lanes.submit(IMAGE_TASK, DEMO)
    lanes.set_model(IMAGE_MODEL, max_running_per_user=1)
    slots.acquire(IMAGE_MODEL, "tsk_demo_elsewhere", 4, lanes.clock.now() + 60, user_id=user_id_of(DEMO[0]),
                  user_cap=1)
    records = [lanes.receive_for("image", runs), lanes.receive_for("image", waits)]

    answer = lanes.worker("image").handle(records)

    assert answer == {"batchItemFailures": [{"itemIdentifier": records[1]["messageId"]}]}
    assert lanes.task(runs).status == "succeeded"
    assert lanes.task(waits).status == "queued"


def test_waiting_for_a_slot_never_sends_a_message_to_the_dlq(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    slots.acquire(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    task_id = lanes.submit(IMAGE_TASK)
    lanes.receive_for("image", task_id)  # the original is in flight; the worker sees its last receives
    near_the_limit = record_for(task_id, receive_count=IMAGE_LANE.max_receives - 1)

    assert lanes.worker("image").handle([near_the_limit]) == {"batchItemFailures": []}

    # Acknowledged and replaced by a fresh copy (its receive count starts again), delayed by the backed-off wait.
    attributes = aws.sqs().get_queue_attributes(QueueUrl=_queue_url(), AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    assert lanes.task(task_id).status == "queued"


def _task_ids(records: list[dict[str, Any]]) -> list[str]:
    return [json.loads(record["body"])["task_id"] for record in records]


def test_a_released_slot_wakes_the_oldest_waiting_task_at_once(lanes: Lanes) -> None:
    lanes.settings = dataclasses.replace(lanes.settings, slot_wait_s=300)  # a deferred message stays away
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    running, first, second = (lanes.submit(IMAGE_TASK) for _ in range(3))
    deferred = [lanes.receive_for("image", first), lanes.receive_for("image", second)]
    worker = lanes.worker("image")
    images = ImagesCallingBack(lanes.ark.base_url, lambda: worker.handle(deferred))

    lanes.worker("image", image_client=images).handle([lanes.receive_for("image", running)])

    assert images.seen == [{"batchItemFailures": [{"itemIdentifier": record["messageId"]} for record in deferred]}]
    assert lanes.task(running).status == "succeeded"
    # Its release made the oldest deferred message visible again: the same message, no second copy.
    woken = lanes.receive("image")
    assert [record["messageId"] for record in woken] == [deferred[0]["messageId"]]
    worker.handle(woken)
    assert lanes.task(first).status == "succeeded"
    assert _task_ids(lanes.receive("image")) == [second]  # and that release woke the next one


def test_each_released_slot_wakes_a_different_waiting_task(lanes: Lanes) -> None:
    lanes.settings = dataclasses.replace(lanes.settings, slot_wait_s=300)
    lanes.set_model(IMAGE_MODEL, concurrency=2)
    for holder in ("tsk_running_1", "tsk_running_2"):
        slots.acquire(IMAGE_MODEL, holder, 2, lanes.clock.now() + 60)
    waiting = [lanes.submit(IMAGE_TASK) for _ in range(3)]
    lanes.worker("image").handle([lanes.receive_for("image", task_id) for task_id in waiting])

    for holder in ("tsk_running_1", "tsk_running_2"):
        slots.release(IMAGE_MODEL, holder)
        Waker(sqs=aws.sqs()).wake_next(TaskRecord(holder, model_id=IMAGE_MODEL))

    assert sorted(_task_ids(lanes.receive("image"))) == sorted(waiting[:2])
    # Two releases that read the same oldest task at once: only one of them wakes it.
    read_by_both = lanes.task(waiting[2])
    waker = Waker(sqs=aws.sqs())
    assert [waker.wake(read_by_both), waker.wake(read_by_both)] == [True, False]


def test_a_deferred_message_already_visible_again_counts_as_woken(lanes: Lanes, monkeypatch: Any) -> None:
    lanes.settings = dataclasses.replace(lanes.settings, slot_wait_s=300)
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    slots.acquire(IMAGE_MODEL, "tsk_running", 1, lanes.clock.now() + 60)
    waiting = lanes.submit(IMAGE_TASK)
    lanes.worker("image").handle([lanes.receive_for("image", waiting)])
    real_sqs = aws.sqs()

    class DeferralOver:
        """SQS as AWS answers once the deferral ended: the message is visible, no longer in flight."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_sqs, name)

        def change_message_visibility(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.MessageNotInflight", "Message": "x"}},
                              "ChangeMessageVisibility")

    assert Waker(sqs=DeferralOver()).wake(lanes.task(waiting))
    attributes = aws.sqs().get_queue_attributes(QueueUrl=_queue_url(), AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"  # no second copy was sent


def test_a_released_slot_skips_waiting_tasks_whose_user_is_at_the_cap(lanes: Lanes) -> None:
    lanes.settings = dataclasses.replace(lanes.settings, slot_wait_s=300)
    lanes.set_model(IMAGE_MODEL, concurrency=2, max_running_per_user=1)
    for holder, user in (("tsk_demo_running", user_id_of(DEMO[0])), ("tsk_other_running", user_id_of(OTHER[0]))):
        slots.acquire(IMAGE_MODEL, holder, 2, lanes.clock.now() + 60, user_id=user, user_cap=1)
    demo_waiting, other_waiting = lanes.submit(IMAGE_TASK, DEMO), lanes.submit(IMAGE_TASK, OTHER)
    records = [lanes.receive_for("image", demo_waiting), lanes.receive_for("image", other_waiting)]
    assert len(lanes.worker("image").handle(records)["batchItemFailures"]) == 2

    slots.release(IMAGE_MODEL, "tsk_other_running", user_id_of(OTHER[0]))
    Waker(sqs=aws.sqs()).wake_next(TaskRecord("tsk_other_running", model_id=IMAGE_MODEL))

    # Demo's task waited longer, but demo still runs one: the freed slot goes to the other user's task.
    woken = lanes.receive("image")
    assert _task_ids(woken) == [other_waiting]
    lanes.worker("image").handle(woken)
    assert lanes.task(other_waiting).status == "succeeded" and lanes.task(demo_waiting).status == "queued"



def test_the_per_user_cap_keeps_one_users_burst_from_taking_every_slot(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=3, max_running_per_user=1)
    lease = lanes.clock.now() + 60
    assert slots.acquire(IMAGE_MODEL, "tsk_demo_running", 3, lease, user_id=user_id_of(DEMO[0]), user_cap=1)
    demo_task, other_task = lanes.submit(IMAGE_TASK, DEMO), lanes.submit(IMAGE_TASK, OTHER)
    worker = lanes.worker("image")

    assert isinstance(worker.process(_delivery(lanes.receive_for("image", demo_task))), Retry)
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
    import dataclasses

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
    slots.acquire(IMAGE_MODEL, "tsk_demo_elsewhere", 4, lanes.clock.now() + 60, user_id=user_id_of(DEMO[0]),
                  user_cap=1)
    first, second = lanes.submit(IMAGE_TASK, OTHER), lanes.submit(IMAGE_TASK, DEMO)
    records = [lanes.receive_for("image", first), lanes.receive_for("image", second)]

    answer = app.handler_map[IMAGE_LANE.handler_name]({"Records": records}, None)

    assert answer == {"batchItemFailures": [{"itemIdentifier": records[1]["messageId"]}]}


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
    assert slots.acquire(IMAGE_MODEL, task_id, 1, lanes.clock.now() + 60)

    assert lanes.worker("image").handle([lanes.receive_for("image", task_id)]) == {"batchItemFailures": []}

    assert lanes.task(task_id).status == "succeeded"
    assert slots.in_use(IMAGE_MODEL) == 0


def test_rechecks_for_a_slot_back_off_while_the_model_stays_full(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    slots.acquire(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    task_id = lanes.submit(IMAGE_TASK)
    worker = lanes.worker("image")

    waits = [worker.process(_delivery(record_for(task_id, receive_count=count))) for count in (1, 2, 4, 6)]

    lows = (1, 2, 8, 8)  # SLOT_WAIT_SECONDS=1 here, doubling per recheck up to 8x
    assert all(low <= wait.delay_s <= 2 * low for wait, low in zip(waits, lows, strict=True))
