"""Admin model configuration and task intake, reading, listing and status changes over the REST API."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from chalicelib import aws, queues, wiring
from chalicelib.ark.answers import VideoTask
from chalicelib.ark.client import VolcVideoClient
from chalicelib.ark.errors import ArkNotFoundError
from chalicelib.ark.model_ids import SEEDANCE_1_0_PRO
from chalicelib.resources import DEFAULT_MODELS
from chalicelib.store import slots, statemachine
from chalicelib.store.records import TaskRecord
from tests.api_client import Api
from tests.factories import ADMIN, DEMO, OTHER, principal_of, user_id_of
from tests.slot_helpers import hold_slot

IMAGE_TASK = {"type": "image", "model_id": "seedream-4.5", "prompt": "a red fox in snow"}
VIDEO_TASK = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "waves", "params": {"duration": 5}}


def png_data_uri(width: int = 64, height: int = 64) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def create(api: Api, body: dict, user=DEMO, **kwargs):
    return api.request("POST", "/api/tasks", body, as_user=user, **kwargs)


# --- models ------------------------------------------------------------------------------------------------


def test_users_see_enabled_models_without_upstream_ids(api: Api) -> None:
    api.request("PUT", "/api/admin/models/seedance-1.0-pro", {"enabled": False}, as_user=ADMIN)
    response = api.request("GET", "/api/models", as_user=DEMO)
    assert response.status_code == 200
    listed = [model["model_id"] for model in response.data["models"]]
    assert listed == sorted(default.model_id for default in DEFAULT_MODELS if default.model_id != "seedance-1.0-pro")
    assert "doubao" not in response.body.decode()
    assert "concurrency" not in response.data["models"][0]


def test_admin_creates_reads_updates_and_deletes_a_model(api: Api) -> None:
    body = {
        "model_id": "seedream-ep",
        "type": "image",
        "upstream_model": "ep-20250101120000-abcde",
        "family": "seedream-4.5",
        "concurrency": 2,
        "daily_quota": 10,
        "user_daily_quota": 3,
    }
    created = api.request("POST", "/api/admin/models", body, as_user=ADMIN)
    assert created.status_code == 201, created.body
    assert created.data["upstream_model"] == "ep-20250101120000-abcde"
    assert created.data["lane"] == "image"
    assert created.data["usage_today"]["used"] == 0
    assert created.data["slots_in_use"] == 0
    assert api.request("POST", "/api/admin/models", body, as_user=ADMIN).status_code == 409

    updated = api.request("PUT", "/api/admin/models/seedream-ep", {"concurrency": 5, "enabled": False}, as_user=ADMIN)
    assert updated.status_code == 200
    assert (updated.data["concurrency"], updated.data["enabled"]) == (5, False)
    assert api.request("GET", "/api/admin/models/seedream-ep", as_user=ADMIN).data["concurrency"] == 5

    assert api.request("DELETE", "/api/admin/models/seedream-ep", as_user=ADMIN).status_code == 200
    assert api.request("GET", "/api/admin/models/seedream-ep", as_user=ADMIN).status_code == 404


@pytest.mark.abuse
@pytest.mark.parametrize(
    "change",
    [{"status": "x"}, {"usage_today": 1}, {"created_at": "2020-01-01"}, {"model_id": "renamed"}, {"type": "video"},
     {"concurrency": 0}, {"daily_quota": -1}, {}],
)
def test_model_updates_reject_server_owned_unknown_or_invalid_fields(api: Api, change: dict) -> None:
    before = api.request("GET", "/api/admin/models/seedream-4.5", as_user=ADMIN).data
    response = api.request("PUT", "/api/admin/models/seedream-4.5", change, as_user=ADMIN)
    assert response.status_code == 400
    assert response.data["error"]["code"] == "validation_error"
    after = api.request("GET", "/api/admin/models/seedream-4.5", as_user=ADMIN).data
    assert after["updated_at"] == before["updated_at"]


def test_a_model_with_unfinished_tasks_cannot_be_deleted(api: Api) -> None:
    assert create(api, IMAGE_TASK).status_code == 201
    response = api.request("DELETE", "/api/admin/models/seedream-4.5", as_user=ADMIN)
    assert response.status_code == 409
    assert response.data["error"]["code"] == "model_in_use"


# --- intake ------------------------------------------------------------------------------------------------


def test_an_image_task_is_accepted_queued_and_enqueued(api: Api) -> None:
    import boto3

    response = create(api, {**IMAGE_TASK, "images": [png_data_uri()], "size": "2k", "max_images": 3})
    assert response.status_code == 201, response.body
    assert response.data["status"] == "queued"
    task_id = response.data["id"]
    assert task_id.startswith("tsk_") and len(task_id) > 20

    task = api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data
    assert task["status"] == "queued"
    assert task["params"] == {"size": "2K", "max_images": 3}
    assert task["queue_position"] == 1
    assert task["cancellable"] is True
    assert task["images"][0].startswith("http")  # the stored copy, handed out as a presigned URL
    assert "base64" not in str(task)
    for field in ("created_at", "updated_at"):
        assert task[field].endswith("Z")

    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="arkflow-test-lane-image")["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    # A first message names the model and user too: its worker acquires the slot before reading the task.
    assert [json.loads(message["Body"]) for message in messages] == [
        {"task_id": task_id, "model_id": task["model_id"], "user_id": user_id_of(DEMO[0])}]


def test_a_video_task_keeps_its_params(api: Api) -> None:
    body = {**VIDEO_TASK, "params": {"resolution": "720p", "ratio": "16:9", "frames": 57, "seed": 7}}
    task_id = create(api, body).data["id"]
    task = api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data
    assert task["type"] == "video"
    assert task["params"] == {"resolution": "720p", "ratio": "16:9", "frames": 57, "seed": 7}


def set_defaults(api: Api, model_id: str, defaults: dict) -> None:
    response = api.request("PUT", f"/api/admin/models/{model_id}", {"defaults": defaults}, as_user=ADMIN)
    assert response.status_code == 200, response.body


def task_params(api: Api, body: dict) -> dict:
    response = create(api, body)
    assert response.status_code == 201, response.body
    return api.request("GET", f"/api/tasks/{response.data['id']}", as_user=DEMO).data["params"]


def test_an_image_task_takes_the_models_defaults_where_the_request_is_silent(api: Api) -> None:
    set_defaults(api, "seedream-4.5", {"size": "4K", "watermark": False, "max_images": 4})

    assert task_params(api, IMAGE_TASK) == {"size": "4K", "watermark": False, "max_images": 4}
    assert task_params(api, {**IMAGE_TASK, "size": "2k", "watermark": True}) == {
        "size": "2K", "watermark": True, "max_images": 4,
    }
    # Reference and generated images share Ark's limit of 15: the default shrinks to what is left.
    many_references = {**IMAGE_TASK, "images": [png_data_uri()] * 13}
    assert task_params(api, many_references)["max_images"] == 2


def test_a_video_task_takes_the_models_defaults_where_the_request_is_silent(api: Api) -> None:
    set_defaults(api, "seedance-1.0-pro", {
        "resolution": "480p", "ratio": "9:16", "duration": 10, "watermark": False, "return_last_frame": True,
    })

    assert task_params(api, {**VIDEO_TASK, "params": {}}) == {
        "resolution": "480p", "ratio": "9:16", "duration": 10, "watermark": False, "return_last_frame": True,
    }
    assert task_params(api, {**VIDEO_TASK, "params": {"resolution": "1080p", "return_last_frame": False}}) == {
        "resolution": "1080p", "ratio": "9:16", "duration": 10, "watermark": False, "return_last_frame": False,
    }
    # A frame count replaces the default duration; a first frame keeps Ark's ratio fitted to the image.
    from_frames = task_params(api, {**VIDEO_TASK, "params": {"frames": 57}})
    assert from_frames["frames"] == 57 and "duration" not in from_frames
    from_image = task_params(api, {**VIDEO_TASK, "images": [png_data_uri(640, 360)], "params": {}})
    assert "ratio" not in from_image and from_image["resolution"] == "480p"


def test_cleared_defaults_no_longer_apply(api: Api) -> None:
    set_defaults(api, "seedream-4.5", {"size": "4K"})
    api.request("PUT", "/api/admin/models/seedream-4.5", {"defaults": None}, as_user=ADMIN)

    assert task_params(api, IMAGE_TASK) == {}


def test_queue_position_counts_the_tasks_ahead(api: Api) -> None:
    ids = [create(api, IMAGE_TASK).data["id"] for _ in range(3)]
    positions = [api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data["queue_position"] for task_id in ids]
    assert positions == [1, 2, 3]


def test_every_bad_field_is_listed(api: Api) -> None:
    body = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "x",
            "params": {"duration": 20, "resolution": "4k", "seed": -2}}
    response = create(api, body)
    assert response.status_code == 400
    assert response.data["error"]["code"] == "validation_error"
    fields = {detail["field"] for detail in response.data["error"]["details"]}
    assert fields >= {"params.duration", "params.resolution", "params.seed"}


@pytest.mark.abuse
@pytest.mark.parametrize("field", ["status", "user_id", "external_id", "id", "result_urls"])
def test_server_owned_fields_are_refused_and_nothing_is_written(api: Api, field: str) -> None:
    response = create(api, {**IMAGE_TASK, field: "x"})
    assert response.status_code == 400
    assert api.request("GET", "/api/tasks", as_user=DEMO).data["tasks"] == []


def test_unknown_disabled_and_mismatched_models(api: Api) -> None:
    unknown = create(api, {**IMAGE_TASK, "model_id": "no-such-model"})
    assert unknown.status_code == 404
    mismatched = create(api, {**IMAGE_TASK, "model_id": "seedance-1.0-pro"})
    assert mismatched.status_code == 400
    assert mismatched.data["error"]["code"] == "type_mismatch"
    api.request("PUT", "/api/admin/models/seedream-4.5", {"enabled": False}, as_user=ADMIN)
    disabled = create(api, IMAGE_TASK)
    assert disabled.status_code == 409
    assert disabled.data["error"]["code"] == "model_disabled"


@pytest.mark.abuse
def test_an_oversized_body_is_refused_before_decoding(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.settings import reload_settings

    monkeypatch.setenv("MAX_BODY_BYTES", "2048")
    reload_settings()
    response = create(api, {**IMAGE_TASK, "prompt": "x" * 4000})
    assert response.status_code == 413
    assert response.data["error"]["code"] == "payload_too_large"
    # Not JSON at all, and still 413 rather than 400: the size is checked first.
    assert api.request("POST", "/api/tasks", raw="{" * 5000, as_user=DEMO).status_code == 413
    monkeypatch.delenv("MAX_BODY_BYTES")
    reload_settings()


def test_daily_quota_is_enforced_per_model_and_per_user(api: Api) -> None:
    api.request("PUT", "/api/admin/models/seedream-4.5", {"daily_quota": 3, "user_daily_quota": 2}, as_user=ADMIN)
    assert [create(api, IMAGE_TASK).status_code for _ in range(3)] == [201, 201, 429]
    refused = create(api, IMAGE_TASK)
    assert refused.data["error"]["code"] == "quota_exceeded"
    assert refused.data["error"]["details"]["quota"] == ["user"]
    assert create(api, IMAGE_TASK, user=OTHER).status_code == 201
    model_full = create(api, IMAGE_TASK, user=OTHER)
    assert model_full.status_code == 429
    assert "model" in model_full.data["error"]["details"]["quota"]
    usage = api.request("GET", "/api/admin/models/seedream-4.5", as_user=ADMIN).data["usage_today"]
    assert (usage["used"], usage["remaining"]) == (3, 0)


def test_a_zero_quota_refuses_even_the_first_request_of_the_day(api: Api) -> None:
    api.request("PUT", "/api/admin/models/seedream-4.5", {"daily_quota": 0}, as_user=ADMIN)
    refused = create(api, IMAGE_TASK)
    assert refused.status_code == 429
    assert refused.data["error"]["code"] == "quota_exceeded"


def test_a_task_cancelled_before_any_ark_call_gives_its_request_back_once(api: Api) -> None:
    api.request("PUT", "/api/admin/models/seedream-4.5", {"daily_quota": 1}, as_user=ADMIN)
    task_id = create(api, IMAGE_TASK).data["id"]
    assert create(api, IMAGE_TASK).status_code == 429
    cancelled = api.request("PUT", f"/api/tasks/{task_id}/status", {"status": "cancelled"}, as_user=ADMIN)
    assert cancelled.status_code == 200
    again = api.request("PUT", f"/api/tasks/{task_id}/status", {"status": "cancelled"}, as_user=ADMIN)
    assert again.status_code == 409
    usage = api.request("GET", "/api/admin/models/seedream-4.5", as_user=ADMIN).data["usage_today"]
    assert usage["used"] == 0
    assert create(api, IMAGE_TASK).status_code == 201
    assert create(api, IMAGE_TASK).status_code == 429


def test_idempotency_key_replays_the_first_answer(api: Api) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = create(api, IMAGE_TASK, headers=headers)
    second = create(api, IMAGE_TASK, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.data == second.data
    assert len(api.request("GET", "/api/tasks", as_user=DEMO).data["tasks"]) == 1
    different = create(api, {**IMAGE_TASK, "prompt": "something else"}, headers=headers)
    assert different.status_code == 409
    assert different.data["error"]["code"] == "idempotency_conflict"
    # Keys are per user: another user's identical key is a new task.
    assert create(api, IMAGE_TASK, user=OTHER, headers=headers).data["id"] != first.data["id"]


def test_a_task_that_could_not_be_queued_fails_and_its_idempotency_key_can_be_retried(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import queues

    def broken_enqueue(*args, **kwargs):
        raise RuntimeError("SQS is down")

    headers = {"Idempotency-Key": "retry-me"}
    with monkeypatch.context() as patch:
        patch.setattr(queues, "enqueue", broken_enqueue)
        refused = create(api, IMAGE_TASK, headers=headers)
    assert refused.status_code == 503
    [failed] = api.request("GET", "/api/tasks", as_user=DEMO).data["tasks"]
    assert (failed["status"], failed["error"]["code"]) == ("failed", "enqueue_failed")
    retried = create(api, IMAGE_TASK, headers=headers)
    assert retried.status_code == 201
    assert retried.data["id"] != failed["id"]
    usage = api.request("GET", "/api/admin/models/seedream-4.5", as_user=ADMIN).data["usage_today"]
    assert usage["used"] == 1  # the failed task gave its request back


# --- reading -----------------------------------------------------------------------------------------------


def test_another_users_task_is_not_found(api: Api) -> None:
    task_id = create(api, IMAGE_TASK).data["id"]
    response = api.request("GET", f"/api/tasks/{task_id}", as_user=OTHER)
    missing_id = "tsk_" + "a" * 26  # well-formed, never created
    missing = api.request("GET", f"/api/tasks/{missing_id}", as_user=OTHER)
    assert (response.status_code, missing.status_code) == (404, 404)
    # Indistinguishable from a task that does not exist: the same body, but for the id it names.
    assert response.data == {"error": {"code": "task_not_found", "message": f"No task {task_id!r}."}}
    assert missing.data == {"error": {"code": "task_not_found", "message": f"No task {missing_id!r}."}}
    assert api.request("GET", "/api/tasks", as_user=OTHER).data["tasks"] == []


def test_listing_pages_newest_first_with_filters(api: Api) -> None:
    image_ids = [create(api, IMAGE_TASK).data["id"] for _ in range(5)]
    video_id = create(api, VIDEO_TASK).data["id"]
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.request("GET", f"/api/tasks{query}", as_user=DEMO).data
        seen += [task["id"] for task in page["tasks"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [video_id, *reversed(image_ids)]
    videos = api.request("GET", "/api/tasks?type=video", as_user=DEMO).data["tasks"]
    assert [task["id"] for task in videos] == [video_id]
    assert api.request("GET", "/api/tasks?status=succeeded", as_user=DEMO).data["tasks"] == []
    assert api.request("GET", "/api/tasks?limit=0", as_user=DEMO).status_code == 400
    assert api.request("GET", "/api/tasks?cursor=%25%25", as_user=DEMO).status_code == 400


def test_admins_list_everyones_tasks(api: Api) -> None:
    mine = create(api, IMAGE_TASK).data["id"]
    theirs = create(api, IMAGE_TASK, user=OTHER).data["id"]
    everyone = api.request("GET", "/api/admin/tasks", as_user=ADMIN).data["tasks"]
    assert [(task["id"], task["user"], task["user_id"]) for task in everyone] == [
        (theirs, "other", user_id_of("other")), (mine, "demo", user_id_of("demo"))]
    only_demo = api.request("GET", "/api/admin/tasks?user=demo", as_user=ADMIN).data["tasks"]
    assert [task["id"] for task in only_demo] == [mine]
    by_id = api.request("GET", f"/api/admin/tasks?user_id={user_id_of('demo')}", as_user=ADMIN).data["tasks"]
    assert [task["id"] for task in by_id] == [mine]
    assert api.request("GET", "/api/admin/tasks?user=nobody", as_user=ADMIN).data["error"]["code"] == \
        "user_not_found"


def all_pages(api: Api, path: str, user: tuple[str, str], page_check: Callable[[Any], None]) -> list[dict]:
    """Every task of a listing, following its cursors; `page_check` sees each page's response."""
    tasks: list[dict] = []
    cursor = None
    for _ in range(200):
        separator = "&" if "?" in path else "?"
        response = api.request("GET", path + (f"{separator}cursor={cursor}" if cursor else ""), as_user=user)
        assert response.status_code == 200, response.body
        page_check(response)
        tasks += response.data["tasks"]
        cursor = response.data["next_cursor"]
        if not cursor:
            return tasks
    raise AssertionError("the listing never ended")


def raise_creation_limit(api: Api, username: str) -> None:
    """Let `username` create more tasks a minute than the default (these tests make a hundred in seconds)."""
    response = api.request("PUT", f"/api/admin/users/{username}", {"requests_per_minute": 10_000}, as_user=ADMIN)
    assert response.status_code == 200, response.body


def lambda_response_bytes(response: Any) -> int:
    """The size of the response as the API's Lambda returns it to API Gateway (the proxy integration's JSON)."""
    return len(json.dumps({"statusCode": response.status_code, "headers": dict(response.headers),
                           "body": response.body.decode(), "isBase64Encoded": False}))


LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024


@pytest.mark.abuse
def test_a_listing_page_stays_under_lambdas_response_limit_whatever_its_tasks_hold(api: Api) -> None:
    """100 tasks of the largest kind: 4,000-character prompts (quotes, which JSON escapes twice on the way out)
    and 14 reference URLs of 4,000 characters. One page of them would be over 6 MB."""
    prompt = 'a "quoted" fox ' * 266 + "x" * 10
    urls = [f"https://images.example.com/{index}/" + "p" * 3960 + ".png" for index in range(14)]
    body = {**IMAGE_TASK, "prompt": prompt, "images": urls}
    raise_creation_limit(api, "demo")
    service, demo = wiring.current().intake, principal_of(DEMO)
    created = [service.create(demo, body).body["id"] for _ in range(100)]

    sizes: list[int] = []

    def under_the_limit(response: Any) -> None:
        sizes.append(lambda_response_bytes(response))
        assert sizes[-1] < LAMBDA_RESPONSE_LIMIT - 1024 * 1024  # room for headers and the envelope

    for path, user in (("/api/tasks?limit=100", DEMO), ("/api/admin/tasks?limit=100", ADMIN)):
        sizes.clear()
        listed = all_pages(api, path, user, under_the_limit)
        assert [task["id"] for task in listed] == list(reversed(created))
        assert len(sizes) >= 2 and all(task["prompt"] == prompt and task["images"] == urls for task in listed)


class QueryReads:
    """How many items each DynamoDB Query read (ScannedCount), as the service sent them."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def read_per_request(self, api: Api, path: str, user: tuple[str, str]) -> tuple[int, Any]:
        self.counts.clear()
        response = api.request("GET", path, as_user=user)
        return sum(self.counts), response


@pytest.fixture
def query_reads(monkeypatch: pytest.MonkeyPatch) -> QueryReads:
    from botocore.client import BaseClient

    reads = QueryReads()
    real_call = BaseClient._make_api_call

    def counting_call(client: Any, operation: str, params: dict) -> Any:
        answer = real_call(client, operation, params)
        if operation == "Query" and params.get("IndexName") in ("by_user", "by_list_shard"):
            reads.counts.append(int(answer.get("ScannedCount", 0)))
        return answer

    monkeypatch.setattr(BaseClient, "_make_api_call", counting_call)
    return reads


@pytest.mark.abuse
def test_a_filtered_listing_reads_a_bounded_number_of_items_per_request(
    api: Api, monkeypatch: pytest.MonkeyPatch, query_reads: QueryReads
) -> None:
    """A filter that matches nothing must not read a whole history in one request: each answers after a read
    budget (scaled down here) with a cursor, and following the cursors finds exactly the matches, in order."""
    from chalicelib.tasks import queries

    monkeypatch.setattr(queries, "PAGE_READ_BUDGET", 50)
    monkeypatch.setattr(queries, "LISTING_QUERY_PAGE", 10)
    raise_creation_limit(api, "demo")
    service, demo = wiring.current().intake, principal_of(DEMO)
    created = [service.create(demo, IMAGE_TASK).body["id"] for _ in range(120)]
    failed = [created[5], created[64], created[118]]
    for task_id in failed:
        statemachine.transition(stored(task_id), statemachine.FAILED)

    for path, user in (("/api/tasks?status=succeeded&limit=20", DEMO),
                       ("/api/admin/tasks?status=succeeded&limit=20", ADMIN)):
        items_read, first = query_reads.read_per_request(api, path, user)
        assert first.status_code == 200 and first.data["tasks"] == []
        assert first.data["next_cursor"] and items_read < 60

    per_request: list[int] = []

    def bounded(response: Any) -> None:
        per_request.append(sum(query_reads.counts))
        query_reads.counts.clear()

    for path, user in (("/api/tasks?status=failed&limit=20", DEMO), ("/api/admin/tasks?status=failed&limit=2",
                                                                      ADMIN)):
        per_request.clear()
        query_reads.counts.clear()
        matches = all_pages(api, path, user, bounded)
        assert [task["id"] for task in matches] == list(reversed(failed))
        assert max(per_request) < 60 and len(per_request) >= 3


# --- status changes ----------------------------------------------------------------------------------------


def put_status(api: Api, task_id: str, body: dict, **auth):
    return api.request("PUT", f"/api/tasks/{task_id}/status", body, **({"as_user": ADMIN} | auth))


def claim(task_id: str, lease_s: float = 300, **fields) -> None:
    """What a lane worker does before calling Ark: take a slot of the task's model, then `queued -> running`."""
    task = TaskRecord.get(task_id, consistent_read=True)
    assert hold_slot(task.model_id, task_id, 4, time.time() + lease_s)
    actions = [TaskRecord.ark_called.set(True)]
    actions += [getattr(TaskRecord, name).set(value) for name, value in fields.items()]
    statemachine.transition(task, statemachine.RUNNING, actions=actions)


def lane_messages(lane: str) -> list[str]:
    """The task ids of the lane's visible messages, which receiving hides for a while."""
    sqs = aws.sqs()
    answer = sqs.receive_message(QueueUrl=queues.queue_url(sqs, lane), MaxNumberOfMessages=10)
    return [json.loads(message["Body"])["task_id"] for message in answer.get("Messages", [])]


def stored(task_id: str) -> TaskRecord:
    return TaskRecord.get(task_id, consistent_read=True)


class RecordingVideos(VolcVideoClient):
    """Ark's video API as far as cancelling goes: it remembers which tasks it was asked to drop, and says each
    task is in the stage its id names (`cgt-queued`, `cgt-running`)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "sk-status-tests")
        self.cancelled: list[str] = []

    def get_task_status(self, task_id: str) -> VideoTask:
        return VideoTask.from_wire({"id": task_id, "model": SEEDANCE_1_0_PRO, "status": task_id.split("-")[-1],
                                    "created_at": 0, "updated_at": 0})

    def cancel_or_delete(self, task_id: str) -> None:
        if task_id.startswith("cgt-vanished"):  # queued when read, gone when dropped
            raise ArkNotFoundError("ResourceNotFound", "The task does not exist.", 404)
        self.cancelled.append(task_id)


@pytest.fixture
def ark_videos(monkeypatch: pytest.MonkeyPatch) -> RecordingVideos:
    videos = RecordingVideos()
    wiring.install(wiring.current().but(video_client=videos))  # the routes' Ark client
    return videos


def test_status_changes_follow_the_state_machine(api: Api) -> None:
    task_id = create(api, IMAGE_TASK).data["id"]
    queued_too_soon = put_status(api, task_id, {"status": "succeeded", "result_urls": ["https://example.com/a.jpg"]})
    assert queued_too_soon.status_code == 409
    assert queued_too_soon.data["error"]["code"] == "illegal_transition"

    claim(task_id, lease_s=-1)  # its worker is gone
    done = put_status(api, task_id, {"status": "succeeded", "result_urls": ["https://example.com/a.jpg"]})
    assert done.status_code == 200
    assert done.data["finished_at"] and done.data["result_urls"] == ["https://example.com/a.jpg"]
    assert slots.in_use("seedream-4.5") == 0
    for target in ("running", "failed", "queued"):
        response = put_status(api, task_id, {"status": target})
        assert response.status_code == 409
        assert response.data["error"]["code"] == "illegal_transition"
    assert put_status(api, task_id, {"status": "failed"}, as_user=DEMO).status_code == 403


def test_the_internal_service_token_may_change_status(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.settings import reload_settings

    monkeypatch.setenv("INTERNAL_SERVICE_TOKEN", "internal-token-for-tests-0123456789")
    reload_settings()
    task_id = create(api, IMAGE_TASK).data["id"]
    response = put_status(api, task_id, {"status": "cancelled"}, as_user=None,
                          token="internal-token-for-tests-0123456789")
    assert response.status_code == 200 and response.data["status"] == "cancelled"
    # The service token opens nothing else.
    assert api.request("GET", "/api/tasks", token="internal-token-for-tests-0123456789").status_code == 403
    monkeypatch.delenv("INTERNAL_SERVICE_TOKEN")
    reload_settings()


def test_only_a_lane_worker_starts_a_task(api: Api) -> None:
    task_id = create(api, IMAGE_TASK).data["id"]
    response = put_status(api, task_id, {"status": "running"})
    assert response.status_code == 409
    assert response.data["error"]["code"] == "worker_only"
    task = api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data
    assert (task["status"], task["version"], task["started_at"], task["queue_position"]) == ("queued", 1, None, 1)
    assert slots.in_use("seedream-4.5") == 0


def test_a_running_image_sent_back_to_the_queue_frees_its_slot_and_is_picked_up_again(api: Api) -> None:
    task_id = create(api, IMAGE_TASK).data["id"]
    assert lane_messages("image") == [task_id]  # its first message, taken by the worker that claims it
    claim(task_id, lease_s=-1)  # a worker that died mid-call
    assert slots.in_use("seedream-4.5") == 1

    response = put_status(api, task_id, {"status": "queued"})

    assert response.status_code == 200 and response.data["status"] == "queued"
    assert slots.in_use("seedream-4.5") == 0
    assert lane_messages("image") == [task_id]


def test_a_running_image_whose_worker_is_still_at_ark_is_left_to_it(api: Api) -> None:
    task_id = create(api, IMAGE_TASK).data["id"]
    assert lane_messages("image") == [task_id]
    claim(task_id)

    for body in ({"status": "queued"}, {"status": "failed"}, {"status": "succeeded", "result_urls": ["https://a.b/c"]}):
        response = put_status(api, task_id, body)
        assert response.status_code == 409 and response.data["error"]["code"] == "worker_busy", body

    # Its slot stays taken, so no other task starts while its call is still at Ark.
    assert stored(task_id).status == "running" and slots.in_use("seedream-4.5") == 1
    assert lane_messages("image") == []


def test_a_task_whose_lane_message_cannot_be_sent_stays_as_it_was(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = create(api, IMAGE_TASK).data["id"]
    claim(task_id, lease_s=-1)

    def sqs_down(*args, **kwargs):
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendMessage")

    monkeypatch.setattr(queues, "enqueue", sqs_down)
    response = put_status(api, task_id, {"status": "queued"})
    assert response.status_code == 503
    assert stored(task_id).status == "running" and slots.in_use("seedream-4.5") == 1


def test_a_running_video_is_not_queued_again(api: Api, ark_videos: RecordingVideos) -> None:
    at_ark = {"external_id": "cgt-20250101-abcde"}
    for stage, fields in [("submitting", {}), ("ark_queued", at_ark), ("ark_running", at_ark)]:
        task_id = create(api, VIDEO_TASK).data["id"]
        assert lane_messages("video") == [task_id]
        claim(task_id, stage=stage, **fields)

        response = put_status(api, task_id, {"status": "queued"})

        assert response.status_code == 409, stage
        assert response.data["error"]["code"] == "video_at_ark"
        assert stored(task_id).status == "running"
        assert lane_messages("video") == []
    assert slots.in_use("seedance-1.0-pro") == 3 and ark_videos.cancelled == []


def test_a_task_succeeds_only_with_its_results(api: Api) -> None:
    image_id, video_id = create(api, IMAGE_TASK).data["id"], create(api, VIDEO_TASK).data["id"]
    claim(image_id, lease_s=-1)
    claim(video_id)
    for task_id, results, field in [
        (image_id, {}, "result_urls"),
        (image_id, {"result_urls": []}, "result_urls"),
        (video_id, {"result_urls": ["https://example.com/a.jpg"]}, "video_url"),
        (video_id, {"last_frame_url": "https://example.com/f.png"}, "video_url"),
    ]:
        response = put_status(api, task_id, {"status": "succeeded", **results})
        assert response.status_code == 400, results
        assert response.data["error"]["code"] == "validation_error"
        assert [detail["field"] for detail in response.data["error"]["details"]] == [field]
    assert stored(image_id).status == stored(video_id).status == "running"


def test_result_urls_must_be_https(api: Api) -> None:
    task_id = create(api, IMAGE_TASK).data["id"]
    claim(task_id)
    https = ["https://example.com/a.jpg"]
    for results, field in [
        ({"result_urls": [*https, "s3://arkflow-test-media/tasks/someone-else/0.png"]}, "result_urls[1]"),
        ({"result_urls": ["http://example.com/a.jpg"]}, "result_urls[0]"),
        ({"result_urls": https, "video_url": "s3://arkflow-test-media/private.mp4"}, "video_url"),
        ({"result_urls": https, "last_frame_url": "file:///etc/passwd"}, "last_frame_url"),
    ]:
        response = put_status(api, task_id, {"status": "succeeded", **results})
        assert response.status_code == 400, results
        assert [detail["field"] for detail in response.data["error"]["details"]] == [field]
    assert stored(task_id).status == "running" and stored(task_id).result_urls is None


def test_a_video_forced_to_fail_is_dropped_at_ark_while_ark_still_queues_it_and_kept_while_ark_generates_it(
    api: Api, ark_videos: RecordingVideos
) -> None:
    ark_queued, ark_running = create(api, VIDEO_TASK).data["id"], create(api, VIDEO_TASK).data["id"]
    claim(ark_queued, stage="ark_queued", external_id="cgt-queued")
    claim(ark_running, stage="ark_running", external_id="cgt-running")
    stop = {"status": "failed", "error": {"code": "operator", "message": "stop"}}

    dropped = put_status(api, ark_queued, stop)
    assert dropped.status_code == 200
    assert (dropped.data["status"], dropped.data["error"]["code"]) == ("failed", "operator")
    # Ark cannot stop one it already generates: ending it here would hand its slot on while Ark still works for it.
    refused = put_status(api, ark_running, stop)
    assert (refused.status_code, refused.data["error"]["code"]) == (409, "generating_at_ark")

    assert ark_videos.cancelled == ["cgt-queued"]
    assert TaskRecord.get(ark_running, consistent_read=True).status == "running"
    assert slots.in_use("seedance-1.0-pro") == 1  # the generating video's slot, still held


def test_a_video_whose_create_is_on_its_way_to_ark_is_not_ended_by_an_operator(api: Api) -> None:
    task_id = create(api, VIDEO_TASK).data["id"]
    claim(task_id, stage="submitting")

    refused = put_status(api, task_id, {"status": "expired"})

    assert (refused.status_code, refused.data["error"]["code"]) == (409, "generating_at_ark")
    assert TaskRecord.get(task_id, consistent_read=True).status == "running"
    assert slots.in_use("seedance-1.0-pro") == 1


def test_a_video_that_leaves_ark_between_the_read_and_the_drop_is_ended_not_taken_for_generating(
    api: Api, ark_videos: RecordingVideos
) -> None:
    task_id = create(api, VIDEO_TASK).data["id"]
    claim(task_id, stage="ark_queued", external_id="cgt-vanished-queued")

    ended = put_status(api, task_id, {"status": "failed", "error": {"code": "operator", "message": "stop"}})

    assert (ended.status_code, ended.data["status"]) == (200, "failed")
    assert slots.in_use("seedance-1.0-pro") == 0
