"""The operator route writes only tasks the system could have written: each target status takes exactly the
fields a task in that status carries, and only results of the task's own type."""

from __future__ import annotations

import pytest

from chalicelib.store.records import TaskRecord
from tests.api_client import Api
from tests.factories import ADMIN, DEMO, IMAGE_TASK, VIDEO_TASK
from tests.tasks.test_tasks_api import claim, create, put_status

IMAGE_URL = "https://example.com/a.jpg"
VIDEO_URL = "https://example.com/v.mp4"
FRAME_URL = "https://example.com/last.png"
ERROR = {"code": "operator", "message": "stopped by an operator"}


def running_task(api: Api, body: dict) -> str:
    """A running task whose worker is gone, which an operator may end any way the state machine allows."""
    task_id = create(api, body).data["id"]
    claim(task_id, lease_s=-1)
    return task_id


def refused_fields(response) -> list[str]:
    assert response.status_code == 400, response.body
    assert response.data["error"]["code"] == "validation_error"
    return sorted(detail["field"] for detail in response.data["error"]["details"])


@pytest.mark.parametrize(("task", "body", "fields"), [
    (IMAGE_TASK, {"status": "failed", "error": ERROR, "result_urls": [IMAGE_URL], "video_url": VIDEO_URL},
     ["result_urls", "video_url"]),
    (IMAGE_TASK, {"status": "succeeded", "result_urls": [IMAGE_URL], "error": ERROR}, ["error"]),
    (IMAGE_TASK, {"status": "succeeded", "result_urls": [IMAGE_URL], "video_url": VIDEO_URL}, ["video_url"]),
    (IMAGE_TASK, {"status": "succeeded", "result_urls": [IMAGE_URL], "last_frame_url": FRAME_URL},
     ["last_frame_url"]),
    (VIDEO_TASK, {"status": "succeeded", "video_url": VIDEO_URL, "result_urls": [IMAGE_URL]}, ["result_urls"]),
    (VIDEO_TASK, {"status": "expired", "error": ERROR, "last_frame_url": FRAME_URL}, ["last_frame_url"]),
    (IMAGE_TASK, {"status": "cancelled", "error": ERROR}, ["error"]),
    (IMAGE_TASK, {"status": "queued", "result_urls": [IMAGE_URL]}, ["result_urls"]),
])
def test_a_field_the_target_status_or_task_type_cannot_carry_is_refused_and_nothing_changes(
    api: Api, task: dict, body: dict, fields: list[str]
) -> None:
    task_id = running_task(api, task)
    version = TaskRecord.get(task_id, consistent_read=True).version

    assert refused_fields(put_status(api, task_id, body)) == fields

    stored = TaskRecord.get(task_id, consistent_read=True)
    assert (stored.status, stored.version, stored.error, stored.result_urls, stored.video_url) == (
        "running", version, None, None, None)


def test_each_target_takes_what_its_tasks_carry(api: Api) -> None:
    image = running_task(api, IMAGE_TASK)
    done = put_status(api, image, {"status": "succeeded", "result_urls": [IMAGE_URL], "error": None})
    assert done.status_code == 200 and done.data["result_urls"] == [IMAGE_URL] and done.data["error"] is None

    video = running_task(api, VIDEO_TASK)
    done = put_status(api, video, {"status": "succeeded", "video_url": VIDEO_URL, "last_frame_url": FRAME_URL})
    assert done.status_code == 200
    assert (done.data["video_url"], done.data["last_frame_url"]) == (VIDEO_URL, FRAME_URL)

    failed = put_status(api, running_task(api, IMAGE_TASK), {"status": "failed", "error": ERROR})
    assert failed.status_code == 200 and failed.data["error"] == ERROR
    expired = put_status(api, running_task(api, VIDEO_TASK), {"status": "expired", "error": ERROR})
    assert expired.status_code == 200 and expired.data["error"] == ERROR
    cancelled = put_status(api, create(api, IMAGE_TASK).data["id"], {"status": "cancelled"})
    assert cancelled.status_code == 200 and cancelled.data["error"] is None
    assert api.request("GET", f"/api/tasks/{image}", as_user=DEMO).data["status"] == "succeeded"
    assert put_status(api, image, {"status": "failed"}, as_user=ADMIN).status_code == 409
