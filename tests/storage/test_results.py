"""Results copied from Ark's expiring URLs into the bucket, streamed, retried, and never failing a task."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import boto3
import httpx
import pytest

from chalicelib import media, statemachine
from chalicelib.db import TaskRecord
from chalicelib.results import PART_BYTES, copy_results
from tests.conftest import DEMO, Api

BUCKET = "arkflow-test-media"
ARK = "https://ark-results.example.com"
VIDEO_BYTES = 2 * PART_BYTES + 1234  # three multipart parts


def video_chunks() -> Iterator[bytes]:
    """A video produced piece by piece, as a network response arrives."""
    block = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while sent < VIDEO_BYTES:
        piece = block[: min(len(block), VIDEO_BYTES - sent)]
        sent += len(piece)
        yield piece


def whole_video() -> bytes:
    return b"".join(video_chunks())


class FakeArkStorage:
    """Ark's result host: serves files by path; `failures` answers a path with errors a number of times first."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.requests: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if self.failures.get(path, 0) > 0:
            self.failures[path] -= 1
            return httpx.Response(503, text="busy")
        if path == "/video.mp4":
            return httpx.Response(200, headers={"content-type": "video/mp4"}, content=video_chunks())
        if path.startswith("/image"):
            return httpx.Response(200, headers={"content-type": "image/jpeg"}, content=f"jpeg {path}".encode())
        return httpx.Response(404)


@pytest.fixture
def ark_storage() -> FakeArkStorage:
    return FakeArkStorage()


@pytest.fixture
def http(ark_storage: FakeArkStorage) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(ark_storage.handle)) as client:
        yield client


def succeeded_task(api: Api, **results: object) -> TaskRecord:
    """A real task of DEMO's, moved through the state machine to `succeeded` with Ark's result URLs."""
    body = {"type": "image", "model_id": "seedream-4.5", "prompt": "a lighthouse at dusk"}
    task_id = api.request("POST", "/api/tasks", body, as_user=DEMO).data["id"]
    task = TaskRecord.get(task_id, consistent_read=True)
    task = statemachine.transition(task, statemachine.RUNNING)
    actions = [getattr(TaskRecord, name).set(value) for name, value in results.items()]
    return statemachine.transition(task, statemachine.SUCCEEDED, actions=actions)


def stored(ref: str) -> dict:
    bucket, key = media.split_s3_ref(ref)
    assert bucket == BUCKET
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)


def no_sleep() -> tuple[list[float], Callable[[float], None]]:
    slept: list[float] = []
    return slept, slept.append


def test_results_are_streamed_into_the_bucket_and_the_api_hands_out_presigned_copies(
    api: Api, http: httpx.Client
) -> None:
    task = succeeded_task(
        api,
        result_urls=[f"{ARK}/image-0.jpeg", f"{ARK}/image-1.jpeg"],
        video_url=f"{ARK}/video.mp4",
        last_frame_url=f"{ARK}/image-last.jpeg",
    )
    version = task.version
    copied = copy_results(task, s3=boto3.client("s3"), http=http, bucket=BUCKET)

    record = TaskRecord.get(task.task_id, consistent_read=True)
    assert record.status == statemachine.SUCCEEDED and record.results_copy_error is None
    assert record.version == version + 1  # published, so watchers swap Ark's links for the copies
    assert [stored(ref)["Body"].read() for ref in record.result_urls] == [b"jpeg /image-0.jpeg", b"jpeg /image-1.jpeg"]
    assert stored(record.last_frame_url)["ContentType"] == "image/jpeg"
    video = stored(record.video_url)
    assert video["ContentType"] == "video/mp4"
    assert hashlib.sha256(video["Body"].read()).digest() == hashlib.sha256(whole_video()).digest()
    # Uploaded part by part while the response streamed in: S3 tags multipart objects with their part count.
    assert video["ETag"].strip('"').endswith("-3")
    assert record.video_url == copied.video_url
    assert media.split_s3_ref(record.video_url)[1] == f"tasks/{task.task_id}/results/video.mp4"

    body = api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).data
    for url in [*body["result_urls"], body["video_url"], body["last_frame_url"]]:
        assert url.startswith(f"https://{BUCKET}.s3.amazonaws.com/tasks/{task.task_id}/results/")
        assert "Signature" in url and "Expires" in url
    assert body["results_copy_error"] is None


def test_a_failed_copy_is_retried(api: Api, http: httpx.Client, ark_storage: FakeArkStorage) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg"])
    ark_storage.failures["/image-0.jpeg"] = 2
    slept, sleep = no_sleep()
    copy_results(task, s3=boto3.client("s3"), http=http, bucket=BUCKET, attempts=3, sleep=sleep)

    record = TaskRecord.get(task.task_id, consistent_read=True)
    assert media.is_s3_ref(record.result_urls[0]) and record.results_copy_error is None
    assert ark_storage.requests.count("/image-0.jpeg") == 3
    assert len(slept) == 2 and slept[1] > slept[0]  # backs off between attempts


def test_a_copy_that_keeps_failing_leaves_a_succeeded_task_with_arks_urls_and_the_error(
    api: Api, http: httpx.Client, ark_storage: FakeArkStorage
) -> None:
    ark_urls = [f"{ARK}/image-0.jpeg", f"{ARK}/image-1.jpeg"]
    task = succeeded_task(api, result_urls=ark_urls)
    ark_storage.failures["/image-1.jpeg"] = 10
    _, sleep = no_sleep()
    copy_results(task, s3=boto3.client("s3"), http=http, bucket=BUCKET, attempts=3, sleep=sleep)

    body = api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).data
    assert body["status"] == "succeeded"
    assert body["result_urls"] == ark_urls
    assert body["results_copy_error"]["code"] == "results_copy_failed"

    # Called again later (Ark's links still valid): finishes the copy and clears the error.
    ark_storage.failures.clear()
    copy_results(TaskRecord.get(task.task_id, consistent_read=True), s3=boto3.client("s3"), http=http,
                 bucket=BUCKET, sleep=sleep)
    body = api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).data
    assert all(f"/tasks/{task.task_id}/results/" in url for url in body["result_urls"])
    assert body["results_copy_error"] is None


def test_nothing_is_copied_without_a_bucket_or_before_success(
    api: Api, http: httpx.Client, ark_storage: FakeArkStorage
) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg"])
    assert copy_results(task, s3=boto3.client("s3"), http=http, bucket="").result_urls == [f"{ARK}/image-0.jpeg"]
    body = {"type": "image", "model_id": "seedream-4.5", "prompt": "still queued"}
    queued = TaskRecord.get(api.request("POST", "/api/tasks", body, as_user=DEMO).data["id"])
    copy_results(queued, s3=boto3.client("s3"), http=http, bucket=BUCKET)
    assert ark_storage.requests == []
