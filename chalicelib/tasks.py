"""Task intake, reading and listing.

A task is created in one DynamoDB transaction with its quota consumption and idempotency record, then
enqueued on its model's lane. Status changes go through `chalicelib.statemachine`.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.expressions.condition import Condition

from chalicelib import catalog, db, media, queues, quota, statemachine
from chalicelib.ark.limits import IMAGE_MAX_TOTAL_IMAGES
from chalicelib.auth import Principal
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import IdempotencyRecord, ModelRecord, QuotaRecord, TaskRecord
from chalicelib.errors import ApiError, Conflict, NotFound, PayloadTooLarge, TooManyRequests, ValidationFailed
from chalicelib.images import frame_image_problem, reference_image_problem
from chalicelib.resources import TASK_LIST_SHARDS, TaskType
from chalicelib.settings import Settings, get_settings
from chalicelib.uploads import UploadService
from chalicelib.validation import ImageRef, ImageTaskRequest, TaskListQuery, VideoTaskRequest
from chalicelib.video import queued_at_ark

IDEMPOTENCY_TTL_S = 24 * 3600
# Without a bucket, inline images stay in the task item, which DynamoDB caps at 400 KB.
MAX_INLINE_BYTES_IN_ITEM = 256 * 1024


@dataclass(frozen=True)
class Created:
    status_code: int
    body: dict[str, Any]


def new_task_id() -> str:
    # 128 random bits: ids can be shared in URLs without being guessable.
    return "tsk_" + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def request_fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class TaskService:
    def __init__(self, *, s3: Any, sqs: Any, settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.s3 = s3
        self.sqs = sqs
        self.settings = settings or get_settings()
        self.clock = clock

    # --- intake -------------------------------------------------------------------------------------------

    def create(
        self,
        principal: Principal,
        request: ImageTaskRequest | VideoTaskRequest,
        raw_body: Any,
        idempotency_key: str | None = None,
    ) -> Created:
        idempotency_id = f"{principal.username}#{idempotency_key}" if idempotency_key else None
        fingerprint = request_fingerprint(raw_body)
        if idempotency_id:
            replay = self._replay(idempotency_id, fingerprint)
            if replay:
                return replay

        model = catalog.get_model(request.model_id)
        if not model.enabled:
            raise Conflict(f"Model {model.model_id!r} is disabled.", code="model_disabled")
        if model.type != request.type:
            raise ValidationFailed(
                f"Model {model.model_id!r} makes {model.type}s, not {request.type}s.",
                code="type_mismatch",
                details=[{"field": "type", "message": f"model {model.model_id!r} is a {model.type} model"}],
            )

        task_id = new_task_id()
        now = self.clock.now()
        created_at = iso(now)
        day = quota.quota_day(now, self.settings.quota_timezone)
        quota_keys = [quota.model_counter_key(model.model_id, day)]
        if model.user_daily_quota is not None:
            quota_keys.append(quota.user_counter_key(principal.username, model.model_id, day))

        images = self._store_images(task_id, principal, request)
        task = TaskRecord(
            task_id,
            user_id=principal.username,
            model_id=model.model_id,
            type=request.type,
            status=statemachine.QUEUED,
            version=1,
            prompt=request.prompt,
            images=images,
            params=_params_of(request, model.defaults or {}),
            upstream_model=model.upstream_model,
            lane=model.lane,
            created_at=created_at,
            updated_at=created_at,
            created_key=f"{created_at}#{task_id}",
            list_shard=f"shard-{int(task_id[-2:], 36) % TASK_LIST_SHARDS}",
            queued_model=model.model_id,
            quota_keys=quota_keys,
        )
        response = {"id": task_id, "status": statemachine.QUEUED}
        try:
            replay = self._commit(task, model, idempotency_id, fingerprint, response, now)
        except BaseException:
            self._delete_stored_images(images)
            raise
        if replay:  # a parallel request with the same Idempotency-Key won the race
            self._delete_stored_images(images)
            return replay

        try:
            queues.enqueue(self.sqs, model.lane, task_id)
        except Exception as exc:
            # Nothing may stay queued with no message to carry it: end the task and give the request back.
            statemachine.transition(
                task,
                statemachine.FAILED,
                actions=[TaskRecord.error.set({"code": "enqueue_failed", "message": "The task could not be queued."})],
                clock=self.clock,
            )
            if idempotency_id:  # the retry the 503 asks for must create a new task, not replay this one
                IdempotencyRecord(idempotency_id).delete()
            raise ApiError("The task could not be queued; try again.", status=503, code="unavailable") from exc
        statemachine.notify(task)  # other tabs of the same user see the new task at once
        return Created(201, response)

    def _replay(self, idempotency_id: str, fingerprint: str) -> Created | None:
        try:
            record = IdempotencyRecord.get(idempotency_id, consistent_read=True)
        except DoesNotExist:
            return None
        if record.expires_at_epoch <= self.clock.now():
            return None
        if record.request_hash != fingerprint:
            raise Conflict(
                "This Idempotency-Key was already used with a different request.", code="idempotency_conflict"
            )
        return Created(int(record.status_code), dict(record.response_body))

    def _commit(
        self,
        task: TaskRecord,
        model: ModelRecord,
        idempotency_id: str | None,
        fingerprint: str,
        response: dict[str, Any],
        now: float,
    ) -> Created | None:
        counter_expiry = int(now) + quota.COUNTER_RETENTION_S
        limits = [int(model.daily_quota)]
        if model.user_daily_quota is not None:
            limits.append(int(model.user_daily_quota))

        def create(transaction: db.TransactWrite) -> None:
            # The model must still exist and be enabled when the task is written.
            transaction.condition_check(ModelRecord, model.model_id, condition=ModelRecord.enabled == True)  # noqa: E712
            transaction.save(task, condition=TaskRecord.task_id.does_not_exist())
            if idempotency_id:
                transaction.save(
                    IdempotencyRecord(
                        idempotency_id,
                        request_hash=fingerprint,
                        task_id=task.task_id,
                        status_code=201,
                        response_body=response,
                        expires_at_epoch=int(now) + IDEMPOTENCY_TTL_S,
                    ),
                    condition=(
                        IdempotencyRecord.idempotency_key.does_not_exist()
                        | (IdempotencyRecord.expires_at_epoch <= int(now))
                    ),
                )
            for key, limit in zip(task.quota_keys, limits, strict=True):
                transaction.update(
                    QuotaRecord(key),
                    actions=[
                        QuotaRecord.used.add(1),
                        QuotaRecord.expires_at_epoch.set(counter_expiry),
                    ],
                    condition=_below(limit),
                )

        try:
            # Parallel creates for one model meet on its quota counter: a conflicted transaction runs again.
            db.write_transaction(create)
        except TransactWriteError as exc:
            return self._explain_cancellation(exc, model, idempotency_id, fingerprint)
        return None

    def _explain_cancellation(
        self,
        exc: TransactWriteError,
        model: ModelRecord,
        idempotency_id: str | None,
        fingerprint: str,
    ) -> Created:
        """The replayed response when a parallel twin won; otherwise raises the error that explains it."""
        unavailable = ApiError("The task could not be created; try again.", status=503, code="unavailable",
                               headers={"Retry-After": "1"})
        if not db.condition_failed(exc):  # conflicts that outlived their retries, throttling, an internal error
            raise unavailable from exc
        # pynamodb sends condition checks, then puts, then updates, in the order each was added.
        failed = [reason is not None and reason.code == "ConditionalCheckFailed" for reason in exc.cancellation_reasons]
        model_failed, _task_failed, *rest = failed
        idempotency_failed = bool(idempotency_id) and rest.pop(0)
        quota_failed = rest
        if idempotency_failed and idempotency_id:
            replay = self._replay(idempotency_id, fingerprint)
            if replay:
                return replay
        if model_failed:
            refreshed = catalog.get_model(model.model_id)
            raise Conflict(f"Model {refreshed.model_id!r} is disabled.", code="model_disabled") from exc
        if any(quota_failed):
            scope = ["model", "user"]
            which = [scope[index] for index, hit in enumerate(quota_failed) if hit]
            raise TooManyRequests(
                "The daily quota for this model is used up; it resets at midnight "
                f"({self.settings.quota_timezone}).",
                code="quota_exceeded",
                details={"quota": which, "model_id": model.model_id},
            ) from exc
        raise unavailable from exc

    def _store_images(
        self, task_id: str, principal: Principal, request: ImageTaskRequest | VideoTaskRequest
    ) -> list[str]:
        stored: list[str] = []
        inline_bytes = 0
        for index, image in enumerate(request.images):
            if image.kind == "url":
                stored.append(image.url or "")
            elif image.kind == "upload":
                stored.append(self._attach_upload(principal, task_id, index, image, request.type))
            else:
                assert image.data is not None and image.content_type is not None
                if self.settings.media_bucket:
                    key = media.input_key(task_id, index, image.content_type)
                    stored.append(media.store_bytes(self.s3, self.settings.media_bucket, key, image.data,
                                                    image.content_type))
                else:
                    inline_bytes += len(image.data)
                    stored.append(media.data_uri(image.content_type, image.data))
        if inline_bytes > MAX_INLINE_BYTES_IN_ITEM:
            raise PayloadTooLarge(
                "Inline images are too large for this deployment; upload them through /api/uploads."
            )
        return stored

    def _attach_upload(
        self, principal: Principal, task_id: str, index: int, image: ImageRef, task_type: TaskType
    ) -> str:
        assert image.upload_id is not None
        problem = reference_image_problem if task_type == "image" else frame_image_problem
        service = UploadService(s3=self.s3, settings=self.settings, clock=self.clock)
        return service.attach(principal.username, image.upload_id, task_id, index, problem)

    def _delete_stored_images(self, refs: list[str]) -> None:
        for ref in refs:
            if media.is_s3_ref(ref) and "/tasks/" in ref:
                bucket, key = media.split_s3_ref(ref)
                self.s3.delete_object(Bucket=bucket, Key=key)

    # --- reading ------------------------------------------------------------------------------------------

    def get_own(self, principal: Principal, task_id: str) -> TaskRecord:
        task = self.get(task_id)
        if task.user_id != principal.username:
            raise task_not_found(task_id)  # never reveal that another user's task exists
        return task

    def get(self, task_id: str) -> TaskRecord:
        try:
            return TaskRecord.get(task_id, consistent_read=True)
        except DoesNotExist as exc:
            raise task_not_found(task_id) from exc

    def queue_position(self, task: TaskRecord) -> int | None:
        if task.status != statemachine.QUEUED or not task.queued_model:
            return None
        ahead = TaskRecord.queued_by_model.count(
            task.queued_model, TaskRecord.created_key < task.created_key
        )
        return ahead + 1

    def list(self, query: TaskListQuery, user: str | None) -> tuple[list[TaskRecord], str | None]:
        """Newest first. `user=None` lists everyone's tasks (admins); the cursor is the last key returned."""
        before = _decode_cursor(query.cursor) if query.cursor else None
        filters = _filter_condition(query)
        if user is not None:
            streams: list[Iterable[TaskRecord]] = [self._newest(TaskRecord.by_user, user, before, filters)]
        else:
            streams = [
                self._newest(TaskRecord.by_list_shard, f"shard-{shard}", before, filters)
                for shard in range(TASK_LIST_SHARDS)
            ]
        merged = heapq.merge(*streams, key=lambda task: task.created_key, reverse=True)
        page = list(itertools.islice(merged, query.limit + 1))
        next_cursor = _encode_cursor(page[query.limit - 1].created_key) if len(page) > query.limit else None
        return page[: query.limit], next_cursor

    @staticmethod
    def _newest(index: Any, hash_key: str, before: str | None, filters: Condition | None) -> Iterator[TaskRecord]:
        return index.query(
            hash_key,
            range_key_condition=(TaskRecord.created_key < before) if before else None,
            filter_condition=filters,
            scan_index_forward=False,
            page_size=50,
        )

    # --- presenting ---------------------------------------------------------------------------------------

    def body(self, task: TaskRecord, *, with_queue_position: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": task.task_id,
            "type": task.type,
            "model_id": task.model_id,
            "status": task.status,
            "version": int(task.version),
            "prompt": task.prompt,
            "images": [media.display_url(self.s3, ref) for ref in task.images or []],
            "params": task.params or {},
            "external_id": task.external_id,
            "error": task.error.as_dict() if task.error else None,
            "result_urls": [media.display_url(self.s3, ref) for ref in task.result_urls or []],
            "image_errors": task.image_errors or [],
            "video_url": media.display_url(self.s3, task.video_url) if task.video_url else None,
            "last_frame_url": media.display_url(self.s3, task.last_frame_url) if task.last_frame_url else None,
            "result": task.result_meta or None,
            "results_copy_error": task.results_copy_error.as_dict() if task.results_copy_error else None,
            "created_at": task.created_at,
            "updated_at": task.updated_at,
            "started_at": task.started_at,
            "finished_at": task.finished_at,
            "cancellable": is_cancellable(task),
        }
        if with_queue_position:
            body["queue_position"] = self.queue_position(task)
        return body


def is_cancellable(task: TaskRecord) -> bool:
    """Queued here, or a video that Ark still holds in its own queue."""
    return task.status == statemachine.QUEUED or queued_at_ark(task)


def _below(limit: int) -> Condition:
    """A counter may take one more request: a missing counter has used nothing, which only a zero quota refuses."""
    if limit <= 0:
        return QuotaRecord.used < 0  # never true: the transaction fails as "quota exceeded"
    return QuotaRecord.used.does_not_exist() | (QuotaRecord.used < limit)


def task_not_found(task_id: str) -> NotFound:
    return NotFound(f"No task {task_id!r}.", code="task_not_found")


def _params_of(request: ImageTaskRequest | VideoTaskRequest, defaults: dict[str, Any]) -> dict[str, Any]:
    """What Ark will be sent: the model's defaults, overlaid by what the request set."""
    if isinstance(request, ImageTaskRequest):
        requested = {"size": request.size, "max_images": request.max_images, "watermark": request.watermark}
        requested = {key: value for key, value in requested.items() if value is not None}
    else:
        requested = request.params.model_dump(exclude_none=True)
    return {**_applicable_defaults(request, defaults, requested), **requested}


def _applicable_defaults(
    request: ImageTaskRequest | VideoTaskRequest, defaults: dict[str, Any], requested: dict[str, Any]
) -> dict[str, Any]:
    """The defaults that fit this request: none may make a valid request one Ark refuses or crops."""
    applicable = dict(defaults)
    if isinstance(request, ImageTaskRequest):
        if "max_images" in applicable:  # reference and generated images share one limit
            room = IMAGE_MAX_TOTAL_IMAGES - len(request.images)
            applicable["max_images"] = min(applicable["max_images"], room)
        return applicable
    if "frames" in requested:  # a request's frame count replaces any duration
        applicable.pop("duration", None)
    if request.images:  # Ark fits the ratio to the first frame unless the request says otherwise
        applicable.pop("ratio", None)
    return applicable


def _filter_condition(query: TaskListQuery) -> Condition | None:
    condition: Condition | None = None
    for attribute, value in (
        (TaskRecord.status, query.status),
        (TaskRecord.type, query.type),
        (TaskRecord.model_id, query.model_id),
    ):
        if value is not None:
            clause = attribute == value
            condition = clause if condition is None else condition & clause
    return condition


def _encode_cursor(created_key: str) -> str:
    return base64.urlsafe_b64encode(created_key.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("Invalid cursor.", details=[{"field": "cursor", "message": "not a cursor"}]) from exc
    if "#" not in decoded:
        raise ValidationFailed("Invalid cursor.", details=[{"field": "cursor", "message": "not a cursor"}])
    return decoded
