"""Hostile or odd Ark answers through the lanes and the poller: each call's outcome is typed, nothing is billed twice,
what is stored stays small, users never read Ark's own text, and every call ends in time."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest

from chalicelib import aws, catalog
from chalicelib.ark.client import VolcImageClient, VolcVideoClient
from chalicelib.ark.errors import MAX_TEXT_BYTES
from chalicelib.lanes.messages import Delivery, Retry
from chalicelib.resources import lane_named
from chalicelib.settings import get_settings
from chalicelib.store import slots
from chalicelib.store.records import ModelRecord, TaskRecord
from chalicelib.video.stages import CREATE_GRACE_S, SUBMITTING
from tests.ark.conftest import Trickler
from tests.factories import ADMIN, IMAGE_MODEL, IMAGE_TASK, VIDEO_MODEL
from tests.factories import SHORT_VIDEO_TASK as VIDEO_TASK
from tests.lane_fixtures import ARK_KEY, Lanes, record_for
from tests.polling import wait_for

IMAGE_LANE, VIDEO_LANE = lane_named("image"), lane_named("video")
SPOILT = ["null_values", "scalar_items", "list_objects", "string_error", "not_json"]
ENDPOINT_ID = "ep-20250101000000-abcde"
HUGE = "Ark says: " + "x" * 500_000


def answering(status: int, body: object) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body)))


def used_on(model_id: str, accepted_at: float) -> int:
    """The model's quota used on the day a task was accepted (the clock may have moved past midnight since)."""
    return catalog.usage_today(ModelRecord.get(model_id), accepted_at, get_settings().quota_timezone)["used"]


def admin_view(lanes: Lanes, task_id: str) -> dict[str, Any]:
    tasks = lanes.api.request("GET", "/api/admin/tasks", as_user=ADMIN).data["tasks"]
    return next(task for task in tasks if task["id"] == task_id)


def stored_bytes(task_id: str) -> int:
    """The size DynamoDB counts against its 400 KB item limit (which moto does not enforce) for the task as stored."""
    item = aws.client("dynamodb").get_item(TableName=TaskRecord.Meta.table_name, Key={"task_id": {"S": task_id}},
                                           ConsistentRead=True)["Item"]
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return len(inner) // 2 + 2
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_bytes(element) for element in inner)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + _value_bytes(element) for name, element in inner.items())
    return len(json.dumps(inner).encode())


# --- images -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", SPOILT)
def test_an_unreadable_image_answer_fails_the_task_once_and_ark_is_never_called_again(lanes: Lanes, kind: str):
    lanes.ark.configure(malformed_answer_fraction=1.0, malformed_answer_kinds=[kind])
    accepted_at = lanes.clock.now()
    task_id = lanes.submit(IMAGE_TASK)
    worker = lanes.worker("image")

    assert worker.handle([lanes.receive_for("image", task_id)]) == {"batchItemFailures": []}  # acknowledged

    body = lanes.get(task_id)
    assert body["status"] == "failed" and body["error"]["code"] == "invalid_response"
    assert slots.in_use(IMAGE_MODEL) == 0
    # Every later delivery, long after any lease, and the sweeper: none calls Ark again.
    for receive in range(2, IMAGE_LANE.max_receives + 1):
        lanes.clock.advance(IMAGE_LANE.visibility_timeout_s)
        worker.handle([record_for(task_id, receive)])
        lanes.sweeper().sweep()
    assert lanes.ark_calls("images.generate") == 1
    assert lanes.ark.stats()["images_generated"] == {"doubao-seedream-4-5-251128": 1}
    assert used_on(IMAGE_MODEL, accepted_at) == 1  # it may have been billed: its quota request stands


def test_an_unreadable_answer_tells_the_user_plainly_and_the_admin_what_did_not_fit(lanes: Lanes):
    lanes.ark.configure(malformed_answer_fraction=1.0, malformed_answer_kinds=["list_objects"])
    task_id = lanes.submit(IMAGE_TASK)
    lanes.run("image")

    error = lanes.get(task_id)["error"]
    assert set(error) == {"code", "message"} and "billed" in error["message"]
    upstream = admin_view(lanes, task_id)["error"]["upstream_message"]
    assert "does not fit" in upstream and "usage" in upstream


# --- videos -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["null_values", "not_json"])
def test_an_unreadable_create_answer_is_reconciled_and_never_sent_again(lanes: Lanes, kind: str):
    lanes.ark.configure(malformed_answer_fraction=1.0, malformed_answer_kinds=[kind],
                        fault_endpoints=["tasks.create"])
    task_id = lanes.submit(VIDEO_TASK)

    outcome = lanes.worker("video").process(Delivery.of(lanes.receive_for("video", task_id)))

    assert outcome == Retry(CREATE_GRACE_S)  # back after the grace, to look at Ark's list
    task = lanes.task(task_id)
    assert (task.status, task.stage, task.external_id) == ("running", SUBMITTING, None)
    (created,) = lanes.ark.sim.tasks.tasks  # Ark did create it
    lanes.ark.configure(malformed_answer_fraction=0.0)
    lanes.clock.advance(CREATE_GRACE_S + 1)
    assert lanes.worker("video").handle([record_for(task_id, 2)]) == {"batchItemFailures": []}
    assert lanes.task(task_id).external_id == created
    assert lanes.ark_calls("tasks.create") == 1


def test_an_unreadable_list_page_is_looked_at_again_and_never_answered_with_a_create(lanes: Lanes):
    task_id = lanes.submit(VIDEO_TASK)
    crashing = lanes.worker("video")
    crashing.videos.submitter.record_submitted = _crash  # type: ignore[method-assign]
    crashing.handle([lanes.receive_for("video", task_id)])  # created at Ark; the worker died before recording it
    lanes.ark.configure(malformed_answer_fraction=1.0, malformed_answer_kinds=["scalar_items"],
                        fault_endpoints=["tasks.list"])
    lanes.clock.advance(CREATE_GRACE_S + 1)

    assert lanes.worker("video").process(Delivery.of(record_for(task_id, 2))) == Retry(CREATE_GRACE_S)
    assert lanes.task(task_id).stage == SUBMITTING and lanes.ark_calls("tasks.create") == 1

    lanes.ark.configure(malformed_answer_fraction=0.0)
    lanes.clock.advance(CREATE_GRACE_S + 1)
    lanes.worker("video").handle([record_for(task_id, 3)])
    assert lanes.task(task_id).external_id in lanes.ark.sim.tasks.tasks
    assert lanes.ark_calls("tasks.create") == 1


def _crash(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the Lambda was killed here")


@pytest.mark.parametrize("kind", ["null_values", "not_json"])
def test_unreadable_status_reads_are_read_again_and_never_stop_the_poller(lanes: Lanes, kind: str):
    task_ids = [lanes.submit(VIDEO_TASK) for _ in range(2)]
    lanes.run("video")
    for task_id in task_ids:
        external_id = lanes.task(task_id).external_id
        wait_for(lambda external_id=external_id: lanes.ark.sim.tasks.tasks[external_id].status == "succeeded")
    lanes.ark.configure(malformed_answer_fraction=1.0, malformed_answer_kinds=[kind], fault_endpoints=["tasks.get"])
    lanes.clock.advance(lanes.settings.video_poll_interval_s)

    assert lanes.video().poll_due(budget_s=10) == 2  # the first unreadable answer did not end the run

    for task_id in task_ids:
        task = lanes.task(task_id)
        assert task.status == "running" and task.next_poll_at > lanes.clock.now()  # polled again later
    lanes.ark.configure(malformed_answer_fraction=0.0)
    lanes.clock.advance(lanes.settings.video_poll_max_interval_s)
    lanes.video().poll_due(budget_s=10)
    assert [lanes.task(task_id).status for task_id in task_ids] == ["succeeded", "succeeded"]


def test_a_read_ark_refuses_for_one_task_never_stops_the_poller(lanes: Lanes):
    task_ids = [lanes.submit(VIDEO_TASK) for _ in range(2)]
    lanes.run("video")
    lanes.ark.configure(api_key="a-key-revoked-since")  # every read: 401, a permanent error
    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    gets_before = lanes.ark_calls("tasks.get")

    lanes.video().poll_due(budget_s=10)

    assert lanes.ark_calls("tasks.get") - gets_before == 2  # each due task got its read
    assert all(lanes.task(task_id).next_poll_at > lanes.clock.now() for task_id in task_ids)


# --- what is stored of Ark's error text -------------------------------------------------------------------------

def test_a_huge_error_message_cannot_grow_the_task_past_dynamodbs_item_limit(lanes: Lanes):
    refusing = VolcImageClient("https://ark.example/api/v3", ARK_KEY, http=answering(
        400, {"error": {"code": "InvalidParameter", "message": HUGE, "param": "", "type": "BadRequest"}}))
    task_id = lanes.submit(IMAGE_TASK)
    lanes.worker("image", image_client=refusing).handle([lanes.receive_for("image", task_id)])

    assert lanes.task(task_id).status == "failed"
    assert stored_bytes(task_id) < 4 * MAX_TEXT_BYTES  # well inside 400 KB, whatever Ark sent
    upstream = admin_view(lanes, task_id)["error"]["upstream_message"]
    assert upstream.startswith("Ark says: xxx") and upstream.endswith("more bytes cut]")


def test_huge_per_image_errors_cannot_grow_the_task_past_dynamodbs_item_limit(lanes: Lanes):
    failed = {"error": {"code": "OutputImageSensitiveContentDetected", "message": HUGE}}
    answer = {"model": "doubao-seedream-4-5-251128", "created": 1,
              "data": [{"url": "https://tos.example/1.jpeg", "size": "2048x2048"}, *[failed] * 14],
              "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}
    images = VolcImageClient("https://ark.example/api/v3", ARK_KEY, http=answering(200, answer))
    task_id = lanes.submit({**IMAGE_TASK, "max_images": 15})
    lanes.worker("image", image_client=images, downloads=answering(404, {})).handle(
        [lanes.receive_for("image", task_id)])

    body = lanes.get(task_id)
    assert body["status"] == "succeeded" and len(body["image_errors"]) == 14
    assert all(set(error) == {"index", "code", "message"} for error in body["image_errors"])
    assert stored_bytes(task_id) < 20 * MAX_TEXT_BYTES


def test_a_failed_videos_huge_error_cannot_grow_the_task_past_dynamodbs_item_limit(lanes: Lanes):
    task_id = lanes.submit(VIDEO_TASK)
    lanes.run("video")
    task = lanes.task(task_id)
    failed = {"id": task.external_id, "status": "failed", "created_at": 1,
              "error": {"code": "InternalServiceError", "message": HUGE}}
    reading = VolcVideoClient("https://ark.example/api/v3", ARK_KEY, http=answering(200, failed))

    lanes.video(video_client=reading).poll(task)

    assert lanes.task(task_id).status == "failed"
    assert stored_bytes(task_id) < 4 * MAX_TEXT_BYTES


# --- what users read of Ark's errors ----------------------------------------------------------------------------

@pytest.mark.parametrize(("model_id", "task_body", "lane"), [
    (IMAGE_MODEL, IMAGE_TASK, "image"), (VIDEO_MODEL, VIDEO_TASK, "video")])
def test_users_never_see_the_upstream_endpoint_in_a_tasks_error(lanes: Lanes, model_id: str,
                                                                task_body: dict[str, Any], lane: str):
    # An endpoint Ark does not know: its error names it.
    lanes.set_model(model_id, upstream_model=ENDPOINT_ID, family=model_id)
    task_id = lanes.submit(task_body)
    lanes.run(lane)

    body = lanes.get(task_id)
    assert body["status"] == "failed" and body["error"]["code"] == "model_unavailable"
    assert body["error"]["message"] and ENDPOINT_ID not in json.dumps(body)
    listed = lanes.api.request("GET", "/api/tasks", as_user=("demo", "demo-pass")).data["tasks"]
    assert ENDPOINT_ID not in json.dumps(listed)
    assert ENDPOINT_ID in admin_view(lanes, task_id)["error"]["upstream_message"]


def test_per_image_errors_show_our_message_to_users_and_arks_to_admins(lanes: Lanes):
    lanes.ark.configure(output_sensitive_marker="FORBIDDEN")
    task_id = lanes.submit({**IMAGE_TASK, "prompt": "FORBIDDEN comic strip of 3 panels", "max_images": 3})
    lanes.run("image")

    (shown,) = lanes.get(task_id)["image_errors"]
    assert shown["code"] == "OutputImageSensitiveContentDetected" and "upstream_message" not in shown
    (admins,) = admin_view(lanes, task_id)["image_errors"]
    assert admins["upstream_message"].startswith("The request failed because the output image may contain")


# --- every Ark call ends in time --------------------------------------------------------------------------------

def test_an_image_call_ends_within_the_lambdas_remaining_time_however_slowly_ark_answers(lanes: Lanes):
    answer = {"model": "doubao-seedream-4-5-251128", "created": 1,
              "data": [{"url": "https://tos.example/1.jpeg", "size": "2048x2048"}],
              "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}
    slow_ark = Trickler("body", answer, gap_s=0.05)  # the whole answer takes about 11 s
    # A Lambda with a second left for the Ark call after the room the worker keeps to record the outcome.
    lane = dataclasses.replace(IMAGE_LANE, lambda_timeout_s=61)
    worker = lanes.wiring(image_client=VolcImageClient(slow_ark.base_url, ARK_KEY, timeout=httpx.Timeout(30.0)),
                          video_client=VolcVideoClient(slow_ark.base_url, ARK_KEY)).new_lane_worker(lane)
    task_id = lanes.submit(IMAGE_TASK)
    try:
        answer = worker.handle([lanes.receive_for("image", task_id)])
    finally:
        slow_ark.close()

    # Cut at its deadline (1 s away) rather than read to the end (about 11 s), where the task would succeed.
    assert len(answer["batchItemFailures"]) == 1  # retried later
    assert lanes.task(task_id).status == "queued" and slots.in_use(IMAGE_MODEL) == 0


# --- 429 QuotaExceeded ------------------------------------------------------------------------------------------

def test_a_full_ark_queue_is_retried_with_backoff_and_ends_with_a_clear_code(lanes: Lanes):
    lanes.ark.configure(video_max_queued=0)  # every create: 429 QuotaExceeded, with Ark's documented text
    accepted_at = lanes.clock.now()
    task_id = lanes.submit(VIDEO_TASK)
    worker = lanes.worker("video")

    first = worker.process(Delivery.of(lanes.receive_for("video", task_id)))

    assert isinstance(first, Retry) and lanes.task(task_id).status == "queued"  # not failed for good
    for receive in range(2, VIDEO_LANE.max_receives + 1):
        worker.handle([record_for(task_id, receive)])
    body = lanes.get(task_id)
    assert body["status"] == "failed" and body["error"]["code"] == "upstream_quota_exceeded"
    assert "QuotaExceeded" in body["error"]["message"]
    assert lanes.ark_calls("tasks.create") == VIDEO_LANE.max_receives
    assert used_on(VIDEO_MODEL, accepted_at) == 0  # a 429 bills nothing: the quota request is given back
