"""A finished task's results kept in arkflow's bucket (docs/storage.md, "What the results copier fetches").

Ark's result URLs expire after 24 hours. With a bucket configured, a succeeded task's images, video and last
frame are streamed from Ark into `tasks/<task_id>/results/` (S3 multipart upload, a few chunks in memory at a
time, never a whole video), and the task then holds `s3://` references the API presigns at read time. A failed
copy is retried; if it still fails, the task stays succeeded, pointing at what was copied and at Ark's URLs for
the rest, and `results_copy_error` says why, so calling `copy_results` again later (before Ark's URLs expire)
finishes the job.

A copy keeps to the caller's time budget (`deadline`): every download stops by it, inside a read too
(`chalicelib.media.downloads`), before the Lambda would be killed mid-way; it aborts the multipart upload it was
streaming, and records why while there is still time. Whatever it stopped at, the task points at copies that
exist or at Ark's URLs. A task deleted while its results are being copied takes the objects this copy wrote with
it, and a task whose results were copied while it was being deleted is deleted again.

Only what Ark could have produced is stored: fetched over https from Ark's result hosts (no redirect followed),
capped in size, of a media type the task can produce as sniffed from the bytes (`storage.RESULT_TYPES`), stored with
that type; and it is handed out as that type, as an attachment (`storage.presign_get`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib.backoff import compute_backoff
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.errors import error_object
from chalicelib.media import storage
from chalicelib.media.downloads import Budget, Downloads, Monotonic, OutOfTime, Refused
from chalicelib.store import statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import TaskRecord

log = logging.getLogger(__name__)

COPY_ATTEMPTS = 3
RETRY_DELAY_S = 1.0
PART_BYTES = 8 * 1024 * 1024
# Parts in flight at once: memory use is about PART_BYTES x (this + 1), whatever the video's size.
PARTS_IN_FLIGHT = 2
TRANSFER = TransferConfig(
    multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=PARTS_IN_FLIGHT
)
COPY_FAILURES = (httpx.HTTPError, BotoCoreError, ClientError, S3UploadFailedError)
# Far above what Ark produces (a 4K JPEG is a few MB, a 1080p 12 s video some tens): anything larger is not a result.
MAX_RESULT_BYTES = {"image": 64 * 1024 * 1024, "video": 1024 * 1024 * 1024}
# A copy given no deadline still ends: this long after it starts.
DEFAULT_COPY_BUDGET_S = 240.0

Sleep = Callable[[float], None]


COPY_FAILED, COPY_OUT_OF_TIME, COPY_REFUSED = "results_copy_failed", "results_copy_out_of_time", "results_copy_refused"


# What a copy needs of its succeeded task, carried by the lane message that asks for it (`copy_order`), so the copy
# reads no task; its pointer write is conditional on the task still holding what the message carried.
_ORDER_FIELDS = ("user_id", "type", "finished_at", "result_urls", "video_url", "last_frame_url")


def copy_order(task: TaskRecord) -> dict[str, Any]:
    """The copy message's part that spares the copy a read of the task: its owner, end and result pointers."""
    return {name: getattr(task, name) for name in _ORDER_FIELDS if getattr(task, name) not in (None, [])}


def ordered_task(task_id: str, order: dict[str, Any]) -> TaskRecord | None:
    """The succeeded task a copy message describes, as it was when the message was sent; None for an order not
    of this shape (the message's task is read instead)."""
    if not all(isinstance(order.get(name, ""), str) for name in _ORDER_FIELDS if name != "result_urls"):
        return None
    urls = order.get("result_urls")
    if urls is not None and not (isinstance(urls, list) and all(isinstance(url, str) for url in urls)):
        return None
    return TaskRecord(task_id, status=statemachine.SUCCEEDED,
                      **{name: order[name] for name in _ORDER_FIELDS if name in order})


def _as_copied_from(task: TaskRecord) -> Condition:
    """The pointer write's condition: the task still ended when it did and points where this copy started from,
    so a late or duplicate copy never undoes or redoes one that finished."""
    condition = TaskRecord.finished_at == task.finished_at if task.finished_at else TaskRecord.finished_at.exists()
    for attribute, value in ((TaskRecord.result_urls, task.result_urls), (TaskRecord.video_url, task.video_url),
                             (TaskRecord.last_frame_url, task.last_frame_url)):
        if value:
            condition &= attribute == value
    return condition


def _result_urls(task: TaskRecord) -> list[str]:
    return [url for url in (*(task.result_urls or []), task.video_url, task.last_frame_url) if url]


def stored_count(task: TaskRecord) -> int:
    """How many of the task's results are already in the bucket."""
    return sum(1 for url in _result_urls(task) if storage.is_s3_ref(url))


def result_count(task: TaskRecord) -> int:
    """How many results the task has (images, its video, its last frame), wherever they are."""
    return len(_result_urls(task))


def ran_out_of_time(task: TaskRecord) -> bool:
    return task.results_copy_error is not None and task.results_copy_error.code == COPY_OUT_OF_TIME


class _ChunkReader:
    """A read-only, non-seekable file over an iterator of byte chunks: what S3's managed upload streams from."""

    def __init__(self, chunks: Iterator[bytes], budget: Budget) -> None:
        self._chunks = chunks
        self._budget = budget
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            self._budget.check()
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
    kind: str  # "image" or "video": the media types it may be, and its size cap


def stream_to_s3(s3: Any, downloads: Downloads, http: httpx.Client, item: _Item, bucket: str,
                 budget: Budget) -> str:
    """Stream one result into `<key_stem>.<ext>`, typed by what its bytes are; returns the object's reference.

    Raises Refused for what must not be stored, OutOfTime when the budget runs out mid-way: S3's managed upload
    then aborts its multipart upload (once the parts in flight finished), so neither an object nor billed parts
    stay behind.
    """
    with downloads.fetch(http, item.source_url, MAX_RESULT_BYTES[item.kind]) as download:
        content_type = storage.sniff(download.head)
        if content_type not in storage.RESULT_TYPES[item.kind]:
            raise Refused(f"the {item.kind} is {content_type or 'of no known media type'}")
        key = f"{item.key_stem}.{storage.extension_of(content_type)}"
        s3.upload_fileobj(
            _ChunkReader(download.chunks(), budget),
            bucket,
            key,
            ExtraArgs={"ContentType": content_type,
                       "ContentDisposition": f'attachment; filename="{storage.download_name(key)}"'},
            Config=TRANSFER,
        )
    return storage.s3_ref(bucket, key)


def _items(task: TaskRecord) -> tuple[list[_Item], _Item | None, _Item | None]:
    prefix = storage.task_prefix(task.task_id) + "results/"
    images = [
        _Item(url, f"{prefix}image-{index}", "image") for index, url in enumerate(task.result_urls or [])
    ]
    video = _Item(task.video_url, f"{prefix}video", "video") if task.video_url else None
    last_frame = _Item(task.last_frame_url, f"{prefix}last-frame", "image") if task.last_frame_url else None
    return images, video, last_frame


def _copy_with_retries(s3: Any, downloads: Downloads, http: httpx.Client, bucket: str, item: _Item,
                       attempts: int, sleep: Sleep, budget: Budget) -> str:
    for attempt in range(1, attempts + 1):
        budget.check()
        try:
            return stream_to_s3(s3, downloads, http, item, bucket, budget)
        except COPY_FAILURES as error:
            budget.check()  # a read cut short by the deadline fails as a timeout: it ran out of time
            if attempt == attempts:
                raise
            log.warning("copying %s failed (attempt %d/%d): %s", item.key_stem, attempt, attempts, error)
            delay = compute_backoff(attempt - 1, base=RETRY_DELAY_S)
            budget.check(needed_s=delay)
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _pointing_at(copied: dict[_Item, str], images: list[_Item], video: _Item | None,
                 last_frame: _Item | None) -> list[Action]:
    """The writes that swap Ark's URLs for the copies made; items not copied keep what they hold."""
    actions: list[Action] = []
    if any(item in copied for item in images):
        actions.append(TaskRecord.result_urls.set([copied.get(item, item.source_url) for item in images]))
    if video and video in copied:
        actions.append(TaskRecord.video_url.set(copied[video]))
    if last_frame and last_frame in copied:
        actions.append(TaskRecord.last_frame_url.set(copied[last_frame]))
    return actions


def _delete_copies(s3: Any, refs: Iterable[str]) -> None:
    """Best effort: what is left behind expires with the bucket's lifecycle rule."""
    keys_by_bucket: dict[str, list[dict[str, str]]] = {}
    for ref in refs:
        bucket, key = storage.split_s3_ref(ref)
        keys_by_bucket.setdefault(bucket, []).append({"Key": key})
    for bucket, objects in keys_by_bucket.items():
        try:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        except (BotoCoreError, ClientError) as error:
            log.warning("copies in %s outlived their deleted task: %s", bucket, error)


def copy_results(
    task: TaskRecord,
    *,
    s3: Any,
    downloads: Downloads,
    bucket: str,
    attempts: int = COPY_ATTEMPTS,
    sleep: Sleep = time.sleep,
    clock: Clock = SYSTEM_CLOCK,
    deadline: float | None = None,
    monotonic: Monotonic = time.monotonic,
) -> TaskRecord:
    """Copy a succeeded task's results into `bucket` and point the task at the copies; returns the task.

    Does nothing without a bucket, for a task that did not succeed, or when everything is already copied.
    Never raises for a failed copy and never changes the status: what was copied is recorded, the rest keeps
    Ark's URLs, and `results_copy_error` says why. `deadline` (a `monotonic()` value; by default
    DEFAULT_COPY_BUDGET_S from now) ends every download and the copy as a failure once it passes: leave time after
    it to abort the upload in flight and write the task.
    Safe to call again (a retry later, a duplicate delivery): keys are fixed per task and copies are kept.
    Raises StaleTask when the task was deleted meanwhile, after deleting the objects this copy wrote.
    """
    if not bucket or task.status != statemachine.SUCCEEDED:
        return task
    images, video, last_frame = _items(task)
    pending = [item for item in [*images, video, last_frame] if item and not storage.is_s3_ref(item.source_url)]
    if not pending:
        return task
    budget = Budget(monotonic() + DEFAULT_COPY_BUDGET_S if deadline is None else deadline, monotonic)
    copied: dict[_Item, str] = {}
    outcome = TaskRecord.results_copy_error.remove()
    try:
        with downloads.client(budget) as http:
            for item in pending:
                copied[item] = _copy_with_retries(s3, downloads, http, bucket, item, attempts, sleep, budget)
    except (OutOfTime, Refused, *COPY_FAILURES) as error:
        log.warning("results of task %s stay at Ark: %s", task.task_id, error)
        if isinstance(error, OutOfTime):
            code, reason = COPY_OUT_OF_TIME, "before time ran out"
        elif isinstance(error, Refused):
            code, reason = COPY_REFUSED, f"({error})"
        else:
            code, reason = COPY_FAILED, f"({type(error).__name__})"
        message = f"Results could not be copied to storage {reason}; Ark's links expire in 24 h."
        outcome = TaskRecord.results_copy_error.set(error_object(code, message))
    try:
        # Published when links changed: a watching client swaps Ark's links for the stored copies.
        return statemachine.update_fields(task, [*_pointing_at(copied, images, video, last_frame), outcome],
                                          publish=bool(copied), condition=_as_copied_from(task), clock=clock)
    except StaleTask:
        # Another delivery recorded a copy first (the same keys: the objects are its), or the task was deleted,
        # maybe before these copies were written.
        if not _exists(task.task_id):
            _delete_copies(s3, copied.values())
        raise


def _exists(task_id: str) -> bool:
    try:
        TaskRecord.get(task_id, consistent_read=True, attributes_to_get=["task_id"])
    except DoesNotExist:
        return False
    return True
