"""Succeeded tasks end with their results in arkflow's bucket, handed out as presigned URLs."""

from __future__ import annotations

import dataclasses
import json
import time
from urllib.parse import urlsplit

import boto3
import httpx
import pytest

from chalicelib import queues
from chalicelib.lanes.images import MIN_COPY_TIME_S
from chalicelib.lanes.messages import Delivery
from chalicelib.media import results, storage
from chalicelib.media.downloads import Downloads, ResultHosts
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord
from tests.factories import IMAGE_TASK
from tests.factories import SHORT_VIDEO_TASK as VIDEO_TASK
from tests.lane_fixtures import Lanes, record_for
from tests.polling import wait_for
from tests.video.test_video_lane import ark_status, callback_token, post_callback, submitted

JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8", b"\x89PNG"


def stored_object(lanes: Lanes, ref: str, task_id: str) -> dict:
    """The object behind `ref`, checked to be in the bucket under the task's results."""
    assert storage.is_s3_ref(ref), ref
    bucket, key = storage.split_s3_ref(ref)
    assert bucket == lanes.settings.media_bucket and key.startswith(f"tasks/{task_id}/results/")
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)


def is_presigned_for(url: str, ref: str) -> bool:
    _, key = storage.split_s3_ref(ref)
    parts = urlsplit(url)
    return parts.path.endswith(key) and "Signature" in parts.query


def test_an_image_task_ends_with_its_images_in_the_bucket(lanes: Lanes) -> None:
    task_id = lanes.submit({**IMAGE_TASK, "prompt": "two views of a red fox in snow", "max_images": 2})

    assert lanes.run("image") == {"batchItemFailures": []}

    task = lanes.task(task_id)
    assert task.status == "succeeded" and task.results_copy_error is None
    assert len(task.result_urls) == 2
    for ref in task.result_urls:
        stored = stored_object(lanes, ref, task_id)
        assert stored["ContentType"] == "image/jpeg" and stored["Body"].read().startswith(JPEG_MAGIC)
    body = lanes.get(task_id)
    assert all(is_presigned_for(url, ref) for url, ref in zip(body["result_urls"], task.result_urls, strict=True))


def test_an_image_call_that_used_most_of_the_lambda_leaves_the_copy_to_a_fresh_message(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    record = lanes.receive_for("image", task_id)
    almost_out_of_time = Delivery.of(record, deadline=time.monotonic() + MIN_COPY_TIME_S / 2)

    assert lanes.worker("image").process(almost_out_of_time) is None

    task = lanes.task(task_id)
    assert task.status == "succeeded" and not storage.is_s3_ref(task.result_urls[0])
    assert task.results_copy_error is None
    assert lanes.run("image") == {"batchItemFailures": []}  # the fresh message, with a whole invocation
    stored_object(lanes, lanes.task(task_id).result_urls[0], task_id)


def succeeded_at_ark(lanes: Lanes, body: dict) -> str:
    """A succeeded task whose results are still only at Ark (its worker ran without a bucket)."""
    task_id = lanes.submit(body)
    with_bucket = lanes.settings
    lanes.settings = dataclasses.replace(with_bucket, media_bucket="")
    lanes.worker("image").handle([lanes.receive_for("image", task_id)])
    lanes.settings = with_bucket
    assert lanes.task(task_id).status == "succeeded" and results.stored_count(lanes.task(task_id)) == 0
    return task_id


def test_a_copy_that_stores_nothing_in_a_whole_invocation_records_why_and_stops(lanes: Lanes) -> None:
    task_id = succeeded_at_ark(lanes, IMAGE_TASK)
    ark_links = lanes.task(task_id).result_urls

    assert lanes.worker("image").process(Delivery.of(record_for(task_id), deadline=time.monotonic() - 1)) is None

    task = lanes.task(task_id)
    assert task.status == "succeeded" and task.result_urls == ark_links
    assert task.results_copy_error["code"] == "results_copy_out_of_time"
    assert lanes.receive("image") == []  # another round would fare no better


def test_a_copy_that_ran_out_of_time_after_storing_some_goes_on_from_a_fresh_message(
    lanes: Lanes, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = succeeded_at_ark(lanes, {**IMAGE_TASK, "prompt": "two views of a red fox in snow", "max_images": 2})
    bucket = boto3.client("s3")

    def time_runs_out_once_one_is_stored() -> float:
        stored = bucket.list_objects_v2(Bucket=lanes.settings.media_bucket, Prefix=f"tasks/{task_id}/results/")
        return 2000.0 if stored.get("KeyCount") else 0.0

    copy = results.copy_results
    monkeypatch.setattr(results, "copy_results",
                        lambda *args, **kwargs: copy(*args, **kwargs, monotonic=time_runs_out_once_one_is_stored))
    lanes.worker("image").process(Delivery.of(record_for(task_id), deadline=1000.0))
    assert results.stored_count(lanes.task(task_id)) == 1
    monkeypatch.setattr(results, "copy_results", copy)

    assert lanes.run("image") == {"batchItemFailures": []}  # the fresh message copies the rest
    task = lanes.task(task_id)
    assert results.stored_count(task) == 2 and task.results_copy_error is None


def test_a_failed_copy_keeps_the_task_succeeded_and_a_later_delivery_finishes_it(
    lanes: Lanes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "RETRY_DELAY_S", 0.0)
    task_id = lanes.submit(IMAGE_TASK)
    busy = httpx.MockTransport(lambda _: httpx.Response(503, text="busy"))
    unreachable = Downloads(ResultHosts((lanes.ark.root_url,)), transport_for=lambda _: busy)

    assert lanes.run("image", downloads=unreachable) == {"batchItemFailures": []}

    body = lanes.get(task_id)
    assert body["status"] == "succeeded" and body["results_copy_error"]["code"] == "results_copy_failed"
    [ark_url] = body["result_urls"]
    assert urlsplit(ark_url).netloc == urlsplit(lanes.ark.base_url).netloc  # still Ark's link, usable for 24 h

    # A redelivery (or any later message for the task) finishes the copy without calling Ark again.
    assert lanes.worker("image").handle([record_for(task_id)]) == {"batchItemFailures": []}

    task = lanes.task(task_id)
    assert task.status == "succeeded" and task.results_copy_error is None
    assert stored_object(lanes, task.result_urls[0], task_id)["Body"].read().startswith(JPEG_MAGIC)
    assert lanes.ark_calls("images.generate") == 1


def assert_video_copied(lanes: Lanes, task_id: str) -> None:
    task = lanes.task(task_id)
    assert task.status == "succeeded" and task.results_copy_error is None
    video = stored_object(lanes, task.video_url, task_id)
    assert video["ContentType"] == "video/mp4" and task.video_url.endswith(".mp4")
    assert video["ContentLength"] > 0
    frame = stored_object(lanes, task.last_frame_url, task_id)
    assert frame["Body"].read().startswith(PNG_MAGIC)
    body = lanes.get(task_id)
    assert is_presigned_for(body["video_url"], task.video_url)
    assert is_presigned_for(body["last_frame_url"], task.last_frame_url)


def test_a_video_the_poller_finds_succeeded_is_copied_by_its_lane(lanes: Lanes) -> None:
    task_id = submitted(lanes, {**VIDEO_TASK, "params": {"duration": 2, "return_last_frame": True}})
    wait_for(lambda: ark_status(lanes, lanes.task(task_id).external_id) == "succeeded")
    lanes.clock.advance(lanes.settings.video_poll_interval_s)

    assert lanes.video().poll_due(budget_s=10) == 1
    assert not storage.is_s3_ref(lanes.task(task_id).video_url)  # the poller itself streams nothing
    assert lanes.run("video") == {"batchItemFailures": []}

    assert_video_copied(lanes, task_id)
    assert lanes.receive("video") == []


def test_a_video_ended_by_arks_callback_is_copied_by_its_lane(lanes: Lanes) -> None:
    task_id = submitted(lanes, {**VIDEO_TASK, "params": {"duration": 2, "return_last_frame": True}})
    external_id = lanes.task(task_id).external_id
    wait_for(lambda: ark_status(lanes, external_id) == "succeeded")
    payload = lanes.ark.sim.tasks.tasks[external_id].to_wire()

    response = post_callback(lanes, f"?task_id={task_id}&token={callback_token(lanes, task_id)}", payload)
    assert response.status_code == 200 and lanes.task(task_id).status == "succeeded"
    assert lanes.run("video") == {"batchItemFailures": []}

    assert_video_copied(lanes, task_id)
    # A duplicate request (a retried callback, a redelivery) changes nothing more.
    version = lanes.task(task_id).version
    assert lanes.worker("video").handle([record_for(task_id)]) == {"batchItemFailures": []}
    assert lanes.task(task_id).version == version


def test_without_a_bucket_results_stay_at_ark_and_no_copy_is_requested(lanes: Lanes) -> None:
    lanes.settings = dataclasses.replace(lanes.settings, media_bucket="")
    task_id = submitted(lanes, {**VIDEO_TASK, "params": {"duration": 2}})
    wait_for(lambda: ark_status(lanes, lanes.task(task_id).external_id) == "succeeded")
    lanes.clock.advance(lanes.settings.video_poll_interval_s)

    assert lanes.video().poll_due(budget_s=10) == 1

    task = lanes.task(task_id)
    assert task.status == "succeeded" and not storage.is_s3_ref(task.video_url)
    assert lanes.receive("video") == []


def copy_message_of_a_polled_video(lanes: Lanes) -> tuple[str, dict]:
    """A video the poller found succeeded, and the lane message asking for its results copy (not yet handled)."""
    task_id = submitted(lanes, {**VIDEO_TASK, "params": {"duration": 2, "return_last_frame": True}})
    wait_for(lambda: ark_status(lanes, lanes.task(task_id).external_id) == "succeeded")
    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    assert lanes.video().poll_due(budget_s=10) == 1
    return task_id, lanes.receive_for("video", task_id)


def test_a_video_copy_reads_no_task_and_a_duplicate_or_late_message_leaves_the_finished_copy_alone(
    lanes: Lanes, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id, record = copy_message_of_a_polled_video(lanes)
    task = lanes.task(task_id)
    assert json.loads(record["body"])["copy"] == {
        "user_id": task.user_id, "type": "video", "finished_at": task.finished_at,
        "video_url": task.video_url, "last_frame_url": task.last_frame_url}
    reads = []
    get = TaskRecord.get
    monkeypatch.setattr(TaskRecord, "get", classmethod(lambda cls, *a, **kw: reads.append(a) or get(*a, **kw)))
    assert lanes.worker("video").handle([record]) == {"batchItemFailures": []}
    monkeypatch.setattr(TaskRecord, "get", get)
    assert reads == []
    assert_video_copied(lanes, task_id)

    copied = lanes.task(task_id)
    duplicate = {**record, "messageId": "duplicate"}
    late = {**record_for(task_id, receive_count=2), "body": record["body"]}  # e.g. a redelivery after a lost ack
    for message in (duplicate, late):
        assert lanes.worker("video").handle([message]) == {"batchItemFailures": []}
        again = lanes.task(task_id)
        assert (again.version, again.video_url, again.last_frame_url) == (
            copied.version, copied.video_url, copied.last_frame_url)
        assert_video_copied(lanes, task_id)  # its objects are still there


def test_a_crash_before_the_copys_pointer_write_is_copied_by_the_redelivered_message(
    lanes: Lanes, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id, record = copy_message_of_a_polled_video(lanes)
    write = statemachine.update_fields

    def killed(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the Lambda was killed here")

    monkeypatch.setattr(statemachine, "update_fields", killed)
    assert lanes.worker("video").handle([record])["batchItemFailures"]
    monkeypatch.setattr(statemachine, "update_fields", write)
    assert not storage.is_s3_ref(lanes.task(task_id).video_url)

    redelivered = {**record, "attributes": {"ApproximateReceiveCount": "2"}}
    assert lanes.worker("video").handle([redelivered]) == {"batchItemFailures": []}
    assert_video_copied(lanes, task_id)


def test_a_copy_order_too_large_for_a_message_is_left_out_and_the_task_read_instead() -> None:
    sent = []

    class Queue:
        def get_queue_url(self, QueueName: str) -> dict:
            return {"QueueUrl": QueueName}

        def send_message(self, **message: object) -> None:
            sent.append(json.loads(str(message["MessageBody"])))

    queue = Queue()
    queues.enqueue(queue, "image", "t-1", copy={"result_urls": ["https://ark.example/a"]})
    queues.enqueue(queue, "image", "t-2", copy={"result_urls": ["https://ark.example/" + "a" * 2000] * 200})
    assert sent == [{"task_id": "t-1", "copy": {"result_urls": ["https://ark.example/a"]}}, {"task_id": "t-2"}]
