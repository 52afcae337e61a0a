"""Results copied from Ark's expiring URLs into the bucket: streamed, retried, kept to a time budget, never failing
a task, and leaving nothing behind when the task is deleted meanwhile."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest

from chalicelib.media import storage
from chalicelib.media.downloads import Downloads, ResultHosts
from chalicelib.media.results import PART_BYTES, RETRY_DELAY_S, copy_results
from chalicelib.store import statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import TaskRecord
from chalicelib.tasks.delete import delete_task
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import DEMO
from tests.tasks.test_delete import stored_keys

BUCKET = os.environ["RESULTS_BUCKET"]  # set by tests/conftest.py
ARK = "https://ark-results.example.com"
VIDEO_BYTES = 2 * PART_BYTES + 1234  # three multipart parts


# What an MP4 starts with (its `ftyp` box), and a JPEG: how the copier tells what a file is.
MP4_SIGNATURE = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2mp41"
JPEG_SIGNATURE = b"\xff\xd8\xff\xe0"


def jpeg(path: str) -> bytes:
    return JPEG_SIGNATURE + f"jpeg {path}".encode()


def video_chunks(after_first_part: Callable[[], None] | None = None) -> Iterator[bytes]:
    """A video produced piece by piece, as a network response arrives; `after_first_part` runs once a multipart
    part's worth of it was sent."""
    block = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while sent < VIDEO_BYTES:
        piece = (MP4_SIGNATURE + block)[: min(len(block), VIDEO_BYTES - sent)] if sent == 0 else \
            block[: min(len(block), VIDEO_BYTES - sent)]
        sent += len(piece)
        yield piece
        if after_first_part and sent - len(piece) < PART_BYTES <= sent:
            after_first_part()


def whole_video() -> bytes:
    return b"".join(video_chunks())


class FakeArkStorage:
    """Ark's result host: serves files by path; `failures` answers a path with errors a number of times first,
    `on_request` runs something when a path is asked for, `mid_video` once the video is part-way sent."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.requests: list[str] = []
        self.on_request: dict[str, Callable[[], None]] = {}
        self.mid_video: Callable[[], None] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if path in self.on_request:
            self.on_request.pop(path)()
        if self.failures.get(path, 0) > 0:
            self.failures[path] -= 1
            return httpx.Response(503, text="busy")
        if path == "/video.mp4":
            return httpx.Response(200, headers={"content-type": "video/mp4"}, content=video_chunks(self.mid_video))
        if path.startswith("/image"):
            return httpx.Response(200, headers={"content-type": "image/jpeg"}, content=jpeg(path))
        return httpx.Response(404)


@pytest.fixture
def ark_storage() -> FakeArkStorage:
    return FakeArkStorage()


def downloads_from(ark_storage: FakeArkStorage) -> Downloads:
    """Downloads from Ark's (fake) result host, answered in memory."""
    return Downloads(ResultHosts((urlsplit(ARK).hostname,)),
                     transport_for=lambda _: httpx.MockTransport(ark_storage.handle))


@pytest.fixture
def downloads(ark_storage: FakeArkStorage) -> Downloads:
    return downloads_from(ark_storage)


def succeeded_task(api: Api, **results: object) -> TaskRecord:
    """A real task of DEMO's, moved through the state machine to `succeeded` with Ark's result URLs."""
    body = {"type": "image", "model_id": "seedream-4.5", "prompt": "a lighthouse at dusk"}
    task_id = api.request("POST", "/api/tasks", body, as_user=DEMO).data["id"]
    task = TaskRecord.get(task_id, consistent_read=True)
    task = statemachine.transition(task, statemachine.RUNNING)
    actions = [getattr(TaskRecord, name).set(value) for name, value in results.items()]
    return statemachine.transition(task, statemachine.SUCCEEDED, actions=actions)


def stored(ref: str) -> dict:
    bucket, key = storage.split_s3_ref(ref)
    assert bucket == BUCKET
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)


def no_sleep() -> tuple[list[float], Callable[[float], None]]:
    slept: list[float] = []
    return slept, slept.append


def unfinished_uploads() -> list[dict[str, Any]]:
    """Multipart uploads started and never completed nor aborted: S3 bills their parts."""
    return boto3.client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def calls_to(s3: Any, operation: str) -> list[str]:
    """Records each call `s3` makes to an S3 operation from now on."""
    calls: list[str] = []
    s3.meta.events.register(f"after-call.s3.{operation}", lambda **_: calls.append(operation))
    return calls


def assert_out_of_time(task_id: str) -> None:
    error = TaskRecord.get(task_id, consistent_read=True).results_copy_error
    assert error["code"] == "results_copy_out_of_time" and "time ran out" in error["message"]


def test_results_are_streamed_into_the_bucket_and_the_api_hands_out_presigned_copies(
    api: Api, downloads: Downloads
) -> None:
    task = succeeded_task(
        api,
        result_urls=[f"{ARK}/image-0.jpeg", f"{ARK}/image-1.jpeg"],
        video_url=f"{ARK}/video.mp4",
        last_frame_url=f"{ARK}/image-last.jpeg",
    )
    version = task.version
    copied = copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET)

    record = TaskRecord.get(task.task_id, consistent_read=True)
    assert record.status == statemachine.SUCCEEDED and record.results_copy_error is None
    assert record.version == version + 1  # published, so watchers swap Ark's links for the copies
    assert [stored(ref)["Body"].read() for ref in record.result_urls] == [jpeg("/image-0.jpeg"), jpeg("/image-1.jpeg")]
    assert stored(record.last_frame_url)["ContentType"] == "image/jpeg"
    video = stored(record.video_url)
    assert video["ContentType"] == "video/mp4"
    assert hashlib.sha256(video["Body"].read()).digest() == hashlib.sha256(whole_video()).digest()
    # Uploaded part by part while the response streamed in: S3 tags multipart objects with their part count.
    assert video["ETag"].strip('"').endswith("-3")
    assert record.video_url == copied.video_url
    assert storage.split_s3_ref(record.video_url)[1] == f"tasks/{task.task_id}/results/video.mp4"

    body = api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).data
    for url in [*body["result_urls"], body["video_url"], body["last_frame_url"]]:
        assert url.startswith(f"https://{BUCKET}.s3.us-east-1.amazonaws.com/tasks/{task.task_id}/results/")
        assert "Signature" in url and "Expires" in url
    assert body["results_copy_error"] is None


def test_a_failed_copy_is_retried(api: Api, downloads: Downloads, ark_storage: FakeArkStorage) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg"])
    ark_storage.failures["/image-0.jpeg"] = 2
    slept, sleep = no_sleep()
    copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET, attempts=3, sleep=sleep)

    record = TaskRecord.get(task.task_id, consistent_read=True)
    assert storage.is_s3_ref(record.result_urls[0]) and record.results_copy_error is None
    assert ark_storage.requests.count("/image-0.jpeg") == 3
    assert len(slept) == 2 and slept[1] > slept[0]  # backs off between attempts


def test_a_copy_that_keeps_failing_leaves_a_succeeded_task_with_what_was_copied_arks_urls_and_the_error(
    api: Api, downloads: Downloads, ark_storage: FakeArkStorage
) -> None:
    ark_urls = [f"{ARK}/image-0.jpeg", f"{ARK}/image-1.jpeg"]
    task = succeeded_task(api, result_urls=ark_urls)
    ark_storage.failures["/image-1.jpeg"] = 10
    _, sleep = no_sleep()
    copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET, attempts=3, sleep=sleep)

    body = api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).data
    assert body["status"] == "succeeded"
    copied, at_ark = body["result_urls"]
    assert f"/tasks/{task.task_id}/results/image-0.jpg?" in copied and at_ark == ark_urls[1]
    assert stored(TaskRecord.get(task.task_id).result_urls[0])["Body"].read() == jpeg("/image-0.jpeg")
    assert body["results_copy_error"]["code"] == "results_copy_failed"

    # Called again later (Ark's links still valid): copies only what is missing and clears the error.
    ark_storage.failures.clear()
    copy_results(TaskRecord.get(task.task_id, consistent_read=True), s3=boto3.client("s3"), downloads=downloads,
                 bucket=BUCKET, sleep=sleep)
    body = api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).data
    assert all(f"/tasks/{task.task_id}/results/" in url for url in body["result_urls"])
    assert body["results_copy_error"] is None
    assert ark_storage.requests.count("/image-0.jpeg") == 1


def test_nothing_is_copied_without_a_bucket_or_before_success(
    api: Api, downloads: Downloads, ark_storage: FakeArkStorage
) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg"])
    unchanged = copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket="")
    assert unchanged.result_urls == [f"{ARK}/image-0.jpeg"]
    body = {"type": "image", "model_id": "seedream-4.5", "prompt": "still queued"}
    queued = TaskRecord.get(api.request("POST", "/api/tasks", body, as_user=DEMO).data["id"])
    copy_results(queued, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET)
    assert ark_storage.requests == []


def test_a_copy_whose_deadline_passed_fetches_nothing_and_records_that_it_ran_out_of_time(
    api: Api, downloads: Downloads, ark_storage: FakeArkStorage
) -> None:
    task = succeeded_task(api, video_url=f"{ARK}/video.mp4", last_frame_url=f"{ARK}/image-last.jpeg")
    monotonic = FrozenClock(start=500.0)
    copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET, deadline=500.0,
                 monotonic=monotonic.now)

    assert_out_of_time(task.task_id)
    record = TaskRecord.get(task.task_id, consistent_read=True)
    assert (record.video_url, record.last_frame_url) == (f"{ARK}/video.mp4", f"{ARK}/image-last.jpeg")
    assert ark_storage.requests == []
    assert stored_keys(task.task_id) == [] and unfinished_uploads() == []


def test_a_deadline_passing_mid_video_aborts_its_upload_and_the_task_keeps_arks_links(
    api: Api, downloads: Downloads, ark_storage: FakeArkStorage
) -> None:
    task = succeeded_task(api, video_url=f"{ARK}/video.mp4", last_frame_url=f"{ARK}/image-last.jpeg")
    monotonic = FrozenClock(start=500.0)
    ark_storage.mid_video = lambda: monotonic.advance(120.0)
    s3 = boto3.client("s3")
    started, aborted = calls_to(s3, "CreateMultipartUpload"), calls_to(s3, "AbortMultipartUpload")

    copy_results(task, s3=s3, downloads=downloads, bucket=BUCKET, deadline=560.0, monotonic=monotonic.now)

    assert_out_of_time(task.task_id)
    record = TaskRecord.get(task.task_id, consistent_read=True)
    assert (record.video_url, record.last_frame_url) == (f"{ARK}/video.mp4", f"{ARK}/image-last.jpeg")
    assert len(started) == 1 and len(aborted) == 1  # the upload was under way, and was given up
    assert stored_keys(task.task_id) == [] and unfinished_uploads() == []
    assert "/image-last.jpeg" not in ark_storage.requests


def test_a_retry_that_would_outlast_the_deadline_is_not_waited_for(
    api: Api, downloads: Downloads, ark_storage: FakeArkStorage
) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg"])
    ark_storage.failures["/image-0.jpeg"] = 10
    monotonic = FrozenClock(start=500.0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        monotonic.advance(seconds)

    # Room for the first backoff (1 s), not for the second (2 s more).
    copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET, attempts=5, sleep=sleep,
                 deadline=500.0 + 2 * RETRY_DELAY_S, monotonic=monotonic.now)

    assert_out_of_time(task.task_id)
    assert slept == [RETRY_DELAY_S] and ark_storage.requests.count("/image-0.jpeg") == 2
    assert TaskRecord.get(task.task_id).result_urls == [f"{ARK}/image-0.jpeg"]


def test_a_task_deleted_while_its_results_are_copied_leaves_no_objects(
    api: Api, downloads: Downloads, ark_storage: FakeArkStorage
) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg", f"{ARK}/image-1.jpeg"])

    def delete_now() -> None:
        assert api.request("DELETE", f"/api/tasks/{task.task_id}", as_user=DEMO).status_code == 200

    # The owner deletes it once the first image is already copied, before the second one is.
    ark_storage.on_request["/image-1.jpeg"] = delete_now

    with pytest.raises(StaleTask):
        copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET)

    assert ark_storage.requests == ["/image-0.jpeg", "/image-1.jpeg"]
    assert stored_keys(task.task_id) == []
    assert api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).status_code == 404


class CopyFinishingMidDelete:
    """An S3 client on which a results copy finishes right after the delete removed the task's objects, before
    the delete removes its record."""

    def __init__(self, copy: Callable[[], object]) -> None:
        self._s3 = boto3.client("s3")
        self._copy: Callable[[], object] | None = copy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def delete_objects(self, **kwargs: Any) -> dict[str, Any]:
        deleted = self._s3.delete_objects(**kwargs)
        if self._copy:
            self._copy, copy = None, self._copy
            copy()
        return deleted


def test_a_copy_finishing_while_the_task_is_deleted_leaves_no_objects(api: Api, downloads: Downloads) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg"])
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"tasks/{task.task_id}/inputs/0.png", Body=b"input")
    copying = TaskRecord.get(task.task_id, consistent_read=True)
    s3 = CopyFinishingMidDelete(
        lambda: copy_results(copying, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET))

    assert delete_task(task, s3=s3, bucket=BUCKET) == 2  # the input, then the copy written meanwhile

    assert stored_keys(task.task_id) == []
    assert api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).status_code == 404
