"""A finished task's results kept in arkflow's bucket, and a task's stored objects removed with it.

Ark's result URLs expire after 24 hours. With a bucket configured, a succeeded task's images, video and last
frame are streamed from Ark into `tasks/<task_id>/results/` (S3 multipart upload, a few chunks in memory at a
time, never a whole video), and the task then holds `s3://` references the API presigns at read time. A failed
copy is retried; if it still fails, the task stays succeeded with Ark's URLs and `results_copy_error` says why,
so calling `copy_results` again later (before Ark's URLs expire) finishes the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.expressions.update import Action

from chalicelib import media, statemachine
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.db import TaskRecord
from chalicelib.errors import Conflict

log = logging.getLogger("arkflow.results")

COPY_ATTEMPTS = 3
RETRY_DELAY_S = 1.0
PART_BYTES = 8 * 1024 * 1024
# Parts in flight at once: memory use is about PART_BYTES x (this + 1), whatever the video's size.
PARTS_IN_FLIGHT = 2
TRANSFER = TransferConfig(
    multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=PARTS_IN_FLIGHT
)
COPY_FAILURES = (httpx.HTTPError, BotoCoreError, ClientError, S3UploadFailedError)
VIDEO_EXTENSIONS = {"video/mp4": "mp4", "video/quicktime": "mov", "video/webm": "webm"}

Sleep = Callable[[float], None]


def task_prefix(task_id: str) -> str:
    """Every object arkflow stores for a task lives under this prefix (inputs and results)."""
    return f"tasks/{task_id}/"


class _ChunkReader:
    """A read-only, non-seekable file over an iterator of byte chunks: what S3's managed upload streams from."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer.extend(chunk)
        end = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data


@dataclass(frozen=True)
class _Item:
    """One result to copy: where it is at Ark, where it goes, and how the task records it."""

    source_url: str
    key_stem: str
    kind: str  # "image" or "video": picks the extension when Ark's Content-Type is missing or odd


def _extension(content_type: str, kind: str) -> str:
    subtype = content_type.partition("/")[2]
    if kind == "video":
        return VIDEO_EXTENSIONS.get(content_type, "mp4")
    return media.EXTENSIONS.get(subtype, "png")


def stream_to_s3(s3: Any, http: httpx.Client, url: str, bucket: str, key_stem: str, kind: str) -> str:
    """Stream one URL into `<key_stem>.<ext>`; returns the object's `s3://` reference."""
    with http.stream("GET", url) as response:
        response.raise_for_status()
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type.startswith(f"{kind}/"):
            content_type = "video/mp4" if kind == "video" else "image/png"
        key = f"{key_stem}.{_extension(content_type, kind)}"
        s3.upload_fileobj(
            _ChunkReader(response.iter_bytes(1024 * 1024)),
            bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Config=TRANSFER,
        )
    return media.s3_ref(bucket, key)


def _items(task: TaskRecord) -> tuple[list[_Item], _Item | None, _Item | None]:
    prefix = task_prefix(task.task_id) + "results/"
    images = [
        _Item(url, f"{prefix}image-{index}", "image") for index, url in enumerate(task.result_urls or [])
    ]
    video = _Item(task.video_url, f"{prefix}video", "video") if task.video_url else None
    last_frame = _Item(task.last_frame_url, f"{prefix}last-frame", "image") if task.last_frame_url else None
    return images, video, last_frame


def _copy_with_retries(s3: Any, http: httpx.Client, bucket: str, item: _Item, attempts: int, sleep: Sleep) -> str:
    if media.is_s3_ref(item.source_url):  # copied by an earlier run
        return item.source_url
    for attempt in range(1, attempts + 1):
        try:
            return stream_to_s3(s3, http, item.source_url, bucket, item.key_stem, item.kind)
        except COPY_FAILURES as error:
            if attempt == attempts:
                raise
            log.warning("copying %s failed (attempt %d/%d): %s", item.key_stem, attempt, attempts, error)
            sleep(RETRY_DELAY_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable: the last attempt returns or raises")


def copy_results(
    task: TaskRecord,
    *,
    s3: Any,
    http: httpx.Client,
    bucket: str,
    attempts: int = COPY_ATTEMPTS,
    sleep: Sleep = time.sleep,
    clock: Clock = SYSTEM_CLOCK,
) -> TaskRecord:
    """Copy a succeeded task's results into `bucket` and point the task at the copies; returns the task.

    Does nothing without a bucket, for a task that did not succeed, or when everything is already copied.
    Never raises for a failed copy and never changes the status: the task keeps Ark's URLs and gets
    `results_copy_error`. Safe to call again (a retry later, a duplicate delivery): keys are fixed per task.
    """
    if not bucket or task.status != statemachine.SUCCEEDED:
        return task
    images, video, last_frame = _items(task)
    pending = [item for item in [*images, video, last_frame] if item and not media.is_s3_ref(item.source_url)]
    if not pending:
        return task
    try:
        copied_images = [_copy_with_retries(s3, http, bucket, item, attempts, sleep) for item in images]
        copied_video = _copy_with_retries(s3, http, bucket, video, attempts, sleep) if video else None
        copied_frame = _copy_with_retries(s3, http, bucket, last_frame, attempts, sleep) if last_frame else None
    except COPY_FAILURES as error:
        log.warning("results of task %s stay at Ark: %s", task.task_id, error)
        message = f"Results could not be copied to storage ({type(error).__name__}); Ark's links expire in 24 h."
        return statemachine.update_fields(
            task,
            [TaskRecord.results_copy_error.set({"code": "results_copy_failed", "message": message})],
            clock=clock,
        )
    actions: list[Action] = [TaskRecord.results_copy_error.remove()]
    if images:
        actions.append(TaskRecord.result_urls.set(copied_images))
    if copied_video:
        actions.append(TaskRecord.video_url.set(copied_video))
    if copied_frame:
        actions.append(TaskRecord.last_frame_url.set(copied_frame))
    # Published: a watching client swaps Ark's links for the stored copies.
    return statemachine.update_fields(task, actions, publish=True, clock=clock)


def delete_task(task: TaskRecord, *, s3: Any, bucket: str) -> int:
    """Remove a finished task: its stored objects, then its record. Returns how many objects were deleted.

    Objects go first, so a failure part-way leaves the record in place and the delete can simply be repeated.
    """
    if task.status not in statemachine.TERMINAL:
        raise Conflict(
            f"Task {task.task_id!r} is {task.status}; cancel it or wait until it ends before deleting it.",
            code="task_not_finished",
        )
    deleted = media.delete_prefix(s3, bucket, task_prefix(task.task_id)) if bucket else 0
    task.delete(condition=TaskRecord.status.is_in(*statemachine.TERMINAL))
    return deleted
