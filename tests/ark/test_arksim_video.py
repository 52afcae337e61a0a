"""The simulated video task lifecycle on an injected clock: states, limits, delete rules, results and expiry."""

from __future__ import annotations

import io
import time
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from .conftest import START, VIDEO_MODEL, auth, data_uri

TASKS = "/contents/generations/tasks"


def create(ark, text: str = "a cat", **fields: Any) -> httpx.Response:
    body = {"model": VIDEO_MODEL, "content": [{"type": "text", "text": text}], **fields}
    return httpx.post(f"{ark.base_url}{TASKS}", json=body, headers=auth())


def create_id(ark, text: str = "a cat", **fields: Any) -> str:
    response = create(ark, text, **fields)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def get(ark, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{ark.base_url}{TASKS}/{task_id}", headers=auth())
    assert response.status_code == 200, response.text
    return response.json()


def delete(ark, task_id: str) -> httpx.Response:
    return httpx.delete(f"{ark.base_url}{TASKS}/{task_id}", headers=auth())


def statuses(ark, task_ids: list[str]) -> list[str]:
    return [get(ark, task_id)["status"] for task_id in task_ids]


def test_a_task_goes_queued_running_succeeded_on_the_clock(frozen_ark):
    task_id = create_id(frozen_ark, resolution="480p", duration=2)
    queued = get(frozen_ark, task_id)
    assert (queued["status"], queued["error"], queued["created_at"]) == ("queued", None, int(START))
    assert "content" not in queued and "usage" not in queued

    frozen_ark.advance(10)
    running = get(frozen_ark, task_id)
    assert (running["status"], running["updated_at"]) == ("running", int(START) + 10)

    frozen_ark.advance(60)
    done = get(frozen_ark, task_id)
    assert (done["status"], done["updated_at"], done["error"]) == ("succeeded", int(START) + 70, None)
    assert done["usage"] == {"completion_tokens": 864 * 480 * 48 // 1024, "total_tokens": 864 * 480 * 48 // 1024}
    assert "last_frame_url" not in done["content"]


def test_a_clock_jump_replays_every_transition_in_order(frozen_ark):
    task_id = create_id(frozen_ark)
    frozen_ark.advance(3600)
    task = get(frozen_ark, task_id)
    assert task["status"] == "succeeded"
    assert task["updated_at"] == int(START) + 70


def test_results_are_a_real_mp4_and_png_of_the_output_size(frozen_ark):
    task_id = create_id(frozen_ark, resolution="480p", ratio="9:16", frames=29, return_last_frame=True)
    frozen_ark.advance(70)
    task = get(frozen_ark, task_id)
    assert task["frames"] == 29 and "duration" not in task
    video = httpx.get(task["content"]["video_url"])
    assert video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.frames, int(stream.average_rate)) == (480, 864, 29, 24)
    frame = httpx.get(task["content"]["last_frame_url"])
    with Image.open(io.BytesIO(frame.content)) as image:
        assert (image.format, image.size) == ("PNG", (480, 864))


def test_result_urls_stop_working_after_24_hours(frozen_ark):
    task_id = create_id(frozen_ark, resolution="480p", return_last_frame=True)
    frozen_ark.advance(70)
    content = get(frozen_ark, task_id)["content"]
    frozen_ark.advance(24 * 3600 - 1)
    assert httpx.get(content["video_url"]).status_code == 200
    frozen_ark.advance(2)
    assert httpx.get(content["video_url"]).status_code == 403
    assert httpx.get(content["last_frame_url"]).status_code == 403


def test_result_url_lifetime_is_configurable(frozen_ark):
    frozen_ark.configure(result_ttl_s=60)
    task_id = create_id(frozen_ark, resolution="480p")
    frozen_ark.advance(70)
    url = get(frozen_ark, task_id)["content"]["video_url"]
    frozen_ark.advance(61)
    assert httpx.get(url).status_code == 403


def test_at_most_ten_tasks_run_per_model_and_the_rest_wait_in_fifo_order(frozen_ark):
    task_ids = [create_id(frozen_ark, f"clip {index}") for index in range(12)]
    frozen_ark.advance(10)
    assert statuses(frozen_ark, task_ids) == ["running"] * 10 + ["queued"] * 2
    frozen_ark.advance(60)
    assert statuses(frozen_ark, task_ids) == ["succeeded"] * 10 + ["running"] * 2
    assert frozen_ark.stats()["max_running"] == {VIDEO_MODEL: 10}


def test_more_than_120_queued_tasks_is_429_quota_exceeded(frozen_ark):
    frozen_ark.configure(video_max_queued=3)
    for index in range(3):
        create_id(frozen_ark, f"clip {index}")
    response = create(frozen_ark)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "QuotaExceeded"
    frozen_ark.advance(10)  # they start running, which frees the queue
    create_id(frozen_ark)


def test_task_creations_per_minute_are_limited(frozen_ark):
    frozen_ark.configure(video_requests_per_minute=2)
    create_id(frozen_ark)
    create_id(frozen_ark)
    response = create(frozen_ark)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "ModelAccountRpmRateLimitExceeded"
    frozen_ark.advance(60)
    create_id(frozen_ark)


def test_delete_cancels_a_queued_task_and_refuses_a_running_one(frozen_ark):
    queued = create_id(frozen_ark)
    assert delete(frozen_ark, queued).json() == {}
    assert get(frozen_ark, queued)["status"] == "cancelled"
    assert delete(frozen_ark, queued).status_code == 400  # already cancelled

    running = create_id(frozen_ark)
    frozen_ark.advance(10)
    refused = delete(frozen_ark, running)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "InvalidParameter"
    assert get(frozen_ark, running)["status"] == "running"


def test_delete_removes_a_finished_task(frozen_ark):
    task_id = create_id(frozen_ark)
    frozen_ark.advance(70)
    assert delete(frozen_ark, task_id).status_code == 200
    assert httpx.get(f"{frozen_ark.base_url}{TASKS}/{task_id}", headers=auth()).status_code == 404
    assert delete(frozen_ark, task_id).status_code == 404


def test_cancelled_tasks_are_purged_after_24_hours(frozen_ark):
    task_id = create_id(frozen_ark)
    delete(frozen_ark, task_id)
    frozen_ark.advance(24 * 3600 + 1)
    assert httpx.get(f"{frozen_ark.base_url}{TASKS}/{task_id}", headers=auth()).status_code == 404


def test_tasks_older_than_7_days_are_gone(frozen_ark):
    task_id = create_id(frozen_ark)
    frozen_ark.advance(6 * 24 * 3600)
    listed = httpx.get(f"{frozen_ark.base_url}{TASKS}", headers=auth()).json()
    assert [item["id"] for item in listed["items"]] == [task_id]
    frozen_ark.advance(24 * 3600 + 1)
    assert httpx.get(f"{frozen_ark.base_url}{TASKS}/{task_id}", headers=auth()).status_code == 404
    assert httpx.get(f"{frozen_ark.base_url}{TASKS}", headers=auth()).json() == {"items": [], "total": 0}


def test_a_task_that_outlives_execution_expires_after_is_expired(frozen_ark):
    frozen_ark.configure(video_run_s=7200)
    task_id = create_id(frozen_ark, execution_expires_after=3600)
    frozen_ark.advance(3599)
    assert get(frozen_ark, task_id)["status"] == "running"
    frozen_ark.advance(2)
    task = get(frozen_ark, task_id)
    assert (task["status"], task["updated_at"]) == ("expired", int(START) + 3600)
    assert "content" not in task


@pytest.mark.parametrize(("fault", "status", "code"), [
    ({"video_fail_fraction": 1.0}, "failed", "InternalServiceError"),
    ({"output_sensitive_fraction": 1.0}, "failed", "OutputVideoSensitiveContentDetected"),
    ({"video_expire_fraction": 1.0}, "expired", None),
])
def test_injected_video_outcomes(frozen_ark, fault, status, code):
    frozen_ark.configure(**fault)
    task_id = create_id(frozen_ark)
    frozen_ark.advance(70)
    task = get(frozen_ark, task_id)
    assert task["status"] == status
    assert (task["error"] or {}).get("code") == code
    assert "content" not in task


def test_list_filters_pages_and_orders_newest_first(frozen_ark):
    ids = []
    for index in range(5):
        ids.append(create_id(frozen_ark, f"clip {index}"))
        frozen_ark.advance(1)
    create_id(frozen_ark, service_tier="flex")

    def listing(query: str) -> dict[str, Any]:
        return httpx.get(f"{frozen_ark.base_url}{TASKS}?{query}", headers=auth()).json()

    page = listing("page_num=2&page_size=2")
    assert page["total"] == 5
    assert [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    chosen = listing(f"filter.task_ids={ids[0]}&filter.task_ids={ids[4]}")
    assert [item["id"] for item in chosen["items"]] == [ids[4], ids[0]]
    frozen_ark.advance(10)
    assert listing("filter.status=running")["total"] == 5
    assert listing("filter.service_tier=flex")["total"] == 1
    assert listing(f"filter.model={VIDEO_MODEL}")["total"] == 5
    assert listing("filter.model=ep-20990101000000-zzzzz")["total"] == 0


def test_adaptive_ratio_follows_the_first_frame_and_unreadable_urls_fall_back_to_16_9(frozen_ark):
    def image_task(url: str) -> str:
        body = {"model": VIDEO_MODEL, "content": [{"type": "image_url", "image_url": {"url": url}}]}
        response = httpx.post(f"{frozen_ark.base_url}{TASKS}", json=body, headers=auth())
        assert response.status_code == 200, response.text
        return response.json()["id"]

    assert get(frozen_ark, image_task(data_uri(960, 960)))["ratio"] == "1:1"
    assert get(frozen_ark, image_task(data_uri(1280, 560)))["ratio"] == "21:9"
    assert get(frozen_ark, image_task("https://example.com/a.png"))["ratio"] == "16:9"


def test_the_simulator_stamps_each_completion_before_anyone_can_see_it(ark):
    from tests.polling import wait_for

    from .test_arksim_faults import generate

    before_image = time.time()
    assert generate(ark).status_code == 200
    seen_image = time.time()
    task_id = create_id(ark, resolution="480p", duration=2)
    wait_for(lambda: get(ark, task_id)["status"] == "succeeded")
    seen_video = time.time()

    image, video = ark.completions()
    assert image["kind"] == "image" and before_image <= image["completed_at"] <= seen_image
    assert (video["kind"], video["id"]) == ("video", task_id) and video["completed_at"] <= seen_video
