"""Task intake, reading and listing.

A task is created in one DynamoDB transaction with its quota consumption and idempotency record, then
enqueued on its model's lane. Status changes go through `chalicelib.statemachine`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.expressions.condition import Condition

from chalicelib import catalog, db, media, queues, quota, statemachine, validation
from chalicelib.ark.errors import error_shown
from chalicelib.ark.limits import IMAGE_MAX_TOTAL_IMAGES
from chalicelib.auth import Principal
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import IdempotencyRecord, ModelRecord, QuotaRecord, TaskRecord
from chalicelib.errors import ApiError, Conflict, NotFound, PayloadTooLarge, TooManyRequests, ValidationFailed
from chalicelib.images import frame_image_problem, reference_image_problem
from chalicelib.resources import TASK_LIST_SHARDS, TaskType
from chalicelib.settings import Settings, get_settings
from chalicelib.uploads import UploadService
from chalicelib.validation import TASK_ID_PATTERN, ImageRef, ImageTaskRequest, TaskListQuery, VideoTaskRequest
from chalicelib.video import queued_at_ark

IDEMPOTENCY_TTL_S = 24 * 3600
# A listing page's bodies stop before this many bytes of Lambda's response (see `response_bytes`): Lambda answers
# at most 6 MB, and the rest of the response (envelope, cursor, headers) needs far less than the 2 MB left.
PAGE_BYTE_BUDGET = 4 * 1024 * 1024
# Items a listing may read per request, matched or not, so a filter that matches nothing still answers in time.
PAGE_READ_BUDGET = 1000
# Items one listing query reads at most (DynamoDB also stops a page at 1 MB).
LISTING_QUERY_PAGE = 100
assert PAGE_READ_BUDGET > TASK_LIST_SHARDS * LISTING_QUERY_PAGE, "every shard is read once before the budget ends"
# Without a bucket, inline images stay in the task item, which DynamoDB caps at 400 KB.
MAX_INLINE_BYTES_IN_ITEM = 256 * 1024


@dataclass(frozen=True)
class Created:
    status_code: int
    body: dict[str, Any]


# `created_key`: the creation time (`clock.iso`) and the task id, which makes it unique.
_CREATED_KEY = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z#" + TASK_ID_PATTERN.strip("^$"))


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
        idempotency_key = validation.idempotency_key(idempotency_key)
        # Scoped to the account: a new account with a deleted one's name replays nothing of it.
        idempotency_id = f"{principal.user_id}#{idempotency_key}" if idempotency_key else None
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
            quota_keys.append(quota.user_counter_key(principal.user_id, model.model_id, day))

        images = self._store_images(task_id, principal, request)
        task = TaskRecord(
            task_id,
            user_id=principal.user_id,
            username=principal.username,
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
        return service.attach(principal.user_id, image.upload_id, task_id, index, problem)

    def _delete_stored_images(self, refs: list[str]) -> None:
        for ref in refs:
            if media.is_s3_ref(ref) and "/tasks/" in ref:
                bucket, key = media.split_s3_ref(ref)
                self.s3.delete_object(Bucket=bucket, Key=key)

    # --- reading ------------------------------------------------------------------------------------------

    def get_own(self, principal: Principal, task_id: str) -> TaskRecord:
        task = self.get(task_id)
        if task.user_id != principal.user_id:
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

    def list(
        self, query: TaskListQuery, owner: str | None, present: Callable[[TaskRecord], dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page, newest first, of `owner`'s tasks (a user id; None: everyone's, for admins), as `present`
        shows them, and the cursor of the next page (None: no more).

        A page ends at `query.limit` tasks, before its bodies reach `PAGE_BYTE_BUDGET` (Lambda answers at most
        6 MB), or once `PAGE_READ_BUDGET` items were read: a filter that matches little still answers in time,
        with fewer tasks (even none) and a cursor to go on from.
        """
        before = _decode_cursor(query.cursor) if query.cursor else None
        filters = _filter_condition(query)
        page_size = LISTING_QUERY_PAGE if filters is not None else min(query.limit + 1, LISTING_QUERY_PAGE)
        if owner is not None:
            shards = [_ShardReader(TaskRecord.by_user, owner, before)]
        else:
            shards = [_ShardReader(TaskRecord.by_list_shard, f"shard-{shard}", before)
                      for shard in range(TASK_LIST_SHARDS)]
        found: list[TaskRecord] = []  # matches read but not on the page yet
        page: list[dict[str, Any]] = []
        page_bytes = items_read = 0
        last_key = ""
        while True:
            settled = _settled_bound(shards)
            # Every match at or newer than `settled` has been read, in every shard: those go out in order.
            ready = sorted((task for task in found if settled is not None and task.created_key >= settled),
                           key=lambda task: task.created_key, reverse=True)
            for task in ready:
                if len(page) == query.limit:
                    return page, _encode_cursor(last_key)
                body = present(task)
                size = response_bytes(body)
                if page and page_bytes + size > PAGE_BYTE_BUDGET:
                    return page, _encode_cursor(last_key)
                page.append(body)
                page_bytes += size
                last_key = task.created_key
                found.remove(task)
            if settled == "":
                return page, None  # every shard read to its end
            if len(page) == query.limit:
                return page, _encode_cursor(last_key)
            if settled is not None and items_read >= PAGE_READ_BUDGET:
                return page, _encode_cursor(settled)
            # Read on in the shard that holds the settled bound back (one never read first).
            reader = max((shard for shard in shards if not shard.exhausted),
                         key=lambda shard: (shard.below is None, shard.below or ""))
            items_read += reader.read_page(filters, page_size, found)

    # --- presenting ---------------------------------------------------------------------------------------

    def admin_body(self, task: TaskRecord) -> dict[str, Any]:
        """What admins see of a task: its body with what Ark itself said about a failure, and its owner, by the
        username it was made under and by id."""
        return {**self.body(task, for_admin=True), "user": task.username or task.user_id, "user_id": task.user_id}

    def body(self, task: TaskRecord, *, with_queue_position: bool = False, for_admin: bool = False) -> dict[str, Any]:
        """The task as the API shows it; an admin's view adds what Ark itself said about its failure."""
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
            "error": error_shown(task.error.as_dict() if task.error else None, to_admin=for_admin),
            "result_urls": [media.display_url(self.s3, ref) for ref in task.result_urls or []],
            "image_errors": [error_shown(error, to_admin=for_admin) for error in task.image_errors or []],
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


@dataclass
class _ShardReader:
    """One index partition of a listing, read newest first one query page at a time."""

    index: Any
    hash_key: str
    # The next page holds items older than this (None: from the newest); everything newer has been read.
    below: str | None
    exhausted: bool = False

    def read_page(self, filters: Condition | None, page_size: int, matches: list[TaskRecord]) -> int:
        """Read one page into `matches` (what passes `filters`); how many items DynamoDB read for it."""
        results = self.index.query(
            self.hash_key,
            range_key_condition=(TaskRecord.created_key < self.below) if self.below else None,
            filter_condition=filters,
            scan_index_forward=False,
            page_size=page_size,
        )
        page = next(results.page_iter)
        matches.extend(TaskRecord.from_raw_data(item) for item in page.get("Items", []))
        last_read = page.get("LastEvaluatedKey")
        if last_read is None:
            self.exhausted = True
        else:
            self.below = last_read["created_key"]["S"]
        return int(page.get("ScannedCount", 0))


def _settled_bound(shards: list[_ShardReader]) -> str | None:
    """The created_key down to which every shard has been read: None while one has not been read at all
    (without a cursor), "" once all have been read to their end."""
    unfinished = [shard for shard in shards if not shard.exhausted]
    if not unfinished:
        return ""
    if any(shard.below is None for shard in unfinished):
        return None
    return max(str(shard.below) for shard in unfinished)


def response_bytes(body: Any) -> int:
    """What `body` adds to a Lambda proxy response: its JSON as Chalice writes it (ASCII only), written again as
    the string value of the response's `body` (so each quote and backslash counts twice), and a separator."""
    return len(json.dumps(json.dumps(body, separators=(",", ":")))) - 1


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
    """The created_key a cursor stands for; 400 for anything else (it becomes a key condition: no value outside
    the key's format may reach DynamoDB, whose sort keys are limited to 1,024 bytes)."""
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("Invalid cursor.", details=[{"field": "cursor", "message": "not a cursor"}]) from exc
    if _CREATED_KEY.fullmatch(decoded) is None:
        raise ValidationFailed("Invalid cursor.", details=[{"field": "cursor", "message": "not a cursor"}])
    return decoded
