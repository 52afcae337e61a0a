"""Task intake (`POST /api/tasks`): a task is written in one DynamoDB transaction with its quota request and its
`Idempotency-Key`, then enqueued on its model's lane.

The transaction's conditions say what refused it: the model disabled meanwhile (409 `model_disabled`), a quota
used up (429 `quota_exceeded`), or a parallel twin with the same key (its answer is replayed). A task that cannot be
enqueued fails at once and gives its request back: nothing stays queued without a message to carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import catalog, ids, queues
from chalicelib.accounts.auth import Principal
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.errors import ApiError, Conflict, PayloadTooLarge, TooManyRequests, ValidationFailed, error_object
from chalicelib.media import storage
from chalicelib.media.inspection import frame_image_problem, reference_image_problem
from chalicelib.media.references import ImageRef
from chalicelib.media.uploads import UploadService
from chalicelib.resources import TASK_LIST_SHARDS, TaskType
from chalicelib.schemas import ImageTaskRequest, VideoTaskRequest, idempotency_key
from chalicelib.settings import Settings
from chalicelib.store import idempotency, quota, slots, statemachine, writes
from chalicelib.store.records import ModelRecord, TaskRecord

# Without a bucket, inline images stay in the task item, which DynamoDB caps at 400 KB.
MAX_INLINE_BYTES_IN_ITEM = 256 * 1024


@dataclass(frozen=True)
class Created:
    status_code: int
    body: dict[str, Any]


class Intake:
    def __init__(self, *, s3: Any, sqs: Any, uploads: UploadService, settings: Settings,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.s3 = s3
        self.sqs = sqs
        self.uploads = uploads
        self.settings = settings
        self.clock = clock

    def create(
        self,
        principal: Principal,
        request: ImageTaskRequest | VideoTaskRequest,
        raw_body: Any,
        key: str | None = None,
    ) -> Created:
        # Scoped to the account: a new account with a deleted one's name replays nothing of it.
        idempotency_id = idempotency.scoped(principal.user_id, idempotency_key(key))
        fingerprint = idempotency.fingerprint(raw_body)
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

        task_id = ids.new_task_id()
        queue_seq, slots_full = slots.take_queue_number(model.model_id)
        now = self.clock.now()
        created_at = iso(now)
        counters = quota.counters(model, principal.user_id, now, self.settings.quota_timezone)

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
            params=catalog.params_of(request, model.defaults or {}),
            upstream_model=model.upstream_model,
            lane=model.lane,
            created_at=created_at,
            updated_at=created_at,
            created_key=f"{created_at}#{task_id}",
            list_shard=f"shard-{int(task_id[-2:], 36) % TASK_LIST_SHARDS}",
            queued_model=model.model_id,
            queue_seq=queue_seq,
            quota_keys=[counter.key for counter in counters],
        )
        response = {"id": task_id, "status": statemachine.QUEUED}
        try:
            replay, parked = self._commit(task, model, counters, idempotency_id, fingerprint, response, now,
                                          park=slots_full)
        except BaseException:
            self._delete_stored_images(images)
            raise
        if replay:  # a parallel request with the same Idempotency-Key won the race
            self._delete_stored_images(images)
            return replay
        if parked:
            # Its model's slots are all taken: parked with its creation, it needs no message until a released
            # slot hands itself over (docs/design.md, "Parked tasks").
            statemachine.notify(task)
            return Created(201, response)

        try:
            queues.enqueue(self.sqs, model.lane, task_id, start=(model.model_id, principal.user_id))
        except Exception as exc:
            # Nothing may stay queued with no message to carry it: end the task and give the request back.
            statemachine.transition(
                task,
                statemachine.FAILED,
                actions=[TaskRecord.error.set(error_object("enqueue_failed", "The task could not be queued."))],
                clock=self.clock,
            )
            if idempotency_id:  # the retry the 503 asks for must create a new task, not replay this one
                idempotency.forget(idempotency_id)
            raise ApiError("The task could not be queued; try again.", status=503, code="unavailable") from exc
        statemachine.notify(task)  # other tabs of the same user see the new task at once
        return Created(201, response)

    def _replay(self, idempotency_id: str, fingerprint: str) -> Created | None:
        answer = idempotency.replay(idempotency_id, fingerprint, self.clock.now())
        return Created(*answer) if answer else None

    def _commit(
        self,
        task: TaskRecord,
        model: ModelRecord,
        counters: list[quota.Counter],
        idempotency_id: str | None,
        fingerprint: str,
        response: dict[str, Any],
        now: float,
        *,
        park: bool,
    ) -> tuple[Created | None, bool]:
        """Write the task (parked, when `park` and its model's slots are still all taken); the replay of a
        parallel twin, if one won, and whether it was parked."""
        def create(transaction: TransactWrite) -> None:
            # The model must still exist and be enabled when the task is written.
            transaction.condition_check(ModelRecord, model.model_id, condition=ModelRecord.enabled == True)  # noqa: E712
            task.parked_model = model.model_id if park else None
            transaction.save(task, condition=TaskRecord.task_id.does_not_exist())
            if idempotency_id:
                idempotency.remember(transaction, idempotency_id, fingerprint, task.task_id, (201, response), now)
            quota.consume(transaction, counters, now)
            if park:  # added last: its refusal is the last reason
                slots.count_parked_in(transaction, model.model_id, +1, condition=slots.Refused(model.model_id)
                                      .still_full())

        try:
            # Parallel creates for one model meet on its quota counter: a conflicted transaction runs again.
            writes.write_transaction(create)
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons or []
            refused = [slots.refusal_of(reason) for reason in reasons]
            if park and refused and refused[-1] is not None and not any(refused[:-1]):
                task.parked_model = None  # a slot freed since it was looked at: queued as usual instead
                return self._commit(task, model, counters, idempotency_id, fingerprint, response, now, park=False)
            return self._explain_cancellation(exc, model, idempotency_id, fingerprint, parking=park), False
        return None, park

    def _explain_cancellation(
        self,
        exc: TransactWriteError,
        model: ModelRecord,
        idempotency_id: str | None,
        fingerprint: str,
        *,
        parking: bool = False,
    ) -> Created:
        """The replayed response when a parallel twin won; otherwise raises the error that explains it."""
        unavailable = ApiError("The task could not be created; try again.", status=503, code="unavailable",
                               headers={"Retry-After": "1"})
        if not writes.condition_failed(exc):  # conflicts that outlived their retries, throttling, an internal error
            raise unavailable from exc
        # pynamodb sends condition checks, then puts, then updates, in the order each was added.
        failed = [reason is not None and reason.code == "ConditionalCheckFailed" for reason in exc.cancellation_reasons]
        if parking:
            failed = failed[:-1]  # the slot record's, added last: a refusal of it alone was retried unparked
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
                    key = storage.input_key(task_id, index, image.content_type)
                    stored.append(storage.store_bytes(self.s3, self.settings.media_bucket, key, image.data,
                                                      image.content_type))
                else:
                    inline_bytes += len(image.data)
                    stored.append(storage.data_uri(image.content_type, image.data))
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
        return self.uploads.attach(principal.user_id, image.upload_id, task_id, index, problem)

    def _delete_stored_images(self, refs: list[str]) -> None:
        for ref in refs:
            if storage.is_s3_ref(ref) and "/tasks/" in ref:
                bucket, key = storage.split_s3_ref(ref)
                self.s3.delete_object(Bucket=bucket, Key=key)
