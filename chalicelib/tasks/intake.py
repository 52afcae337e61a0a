"""Task intake (`POST /api/tasks`): a task is written in one DynamoDB transaction with its quota request and its
`Idempotency-Key`, then enqueued on its model's lane.

The request is judged against its model's capabilities (`chalicelib.tasks.checks`); a model its provider retired
takes no task (409 `model_retired`), and a deprecated one's tasks carry `warnings`. The transaction's conditions say
what refused it: the model disabled meanwhile (409 `model_disabled`) or moved to another upstream (409
`model_changed`), a quota used up (429 `quota_exceeded`), or a parallel twin with the same key (its answer is
replayed). A task that cannot be enqueued fails at once and gives its request back: nothing stays queued without a
message to carry it.

A render (`POST /api/tasks/{id}/render`) is a new video task made from a succeeded draft: Ark reuses the draft's
prompt, inputs and settings, so the task carries only the draft's Ark id and the few fields a render may change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import catalog, ids, observability, queues
from chalicelib.accounts.auth import Principal
from chalicelib.ark import capabilities
from chalicelib.ark.capabilities import ArkModel
from chalicelib.clock import SYSTEM_CLOCK, Clock, epoch_of, iso
from chalicelib.errors import ApiError, Conflict, PayloadTooLarge, TooManyRequests, ValidationFailed, error_object
from chalicelib.media import storage
from chalicelib.media.inspection import frame_image_problem, reference_image_problem
from chalicelib.media.references import ImageRef
from chalicelib.media.uploads import UploadService
from chalicelib.resources import TASK_LIST_SHARDS, TaskType
from chalicelib.schemas import (
    ImageTaskRequest,
    RenderRequest,
    VideoTaskRequest,
    idempotency_key,
    parse,
    parse_task_request,
)
from chalicelib.settings import Settings
from chalicelib.store import idempotency, quota, slots, statemachine, writes
from chalicelib.store.rate_limit import CreationRateLimit
from chalicelib.store.records import ModelRecord, TaskRecord
from chalicelib.webhooks.events import DEFAULT_EVENTS

# Without a bucket, inline images stay in the task item, which DynamoDB caps at 400 KB.
MAX_INLINE_BYTES_IN_ITEM = 256 * 1024


# What a render may set; Ark reuses the rest from the draft (docs/ark.md, "Drafts").
RENDER_FIELDS = frozenset({"resolution", "watermark", "return_last_frame", "service_tier", "execution_expires_after"})


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
        self.rate_limit = CreationRateLimit(clock)

    def create(self, principal: Principal, raw_body: Any, key: str | None = None) -> Created:
        """`POST /api/tasks`: the body judged against its model's capabilities, then written and enqueued."""
        models: dict[str, ModelRecord | None] = {}

        def ark_model_of(model_id: str) -> ArkModel | None:
            models[model_id] = catalog.find_model(model_id)
            found = models[model_id]
            return catalog.ark_model_of(found) if found is not None else None

        request = parse_task_request(raw_body, ark_model_of, webhook_loopback=self.settings.webhook_allow_loopback)
        model = models.get(request.model_id) or catalog.get_model(request.model_id)
        return self._accept(principal, model, request, raw_body, key)

    def render(self, principal: Principal, draft: TaskRecord, raw_body: Any, key: str | None = None) -> Created:
        """`POST /api/tasks/{id}/render`: the succeeded draft `draft` (the caller's own) made in full."""
        if draft.type != "video" or not (draft.params or {}).get("draft"):
            raise Conflict("Only a draft video can be rendered.", code="not_a_draft")
        if draft.status != statemachine.SUCCEEDED or not draft.external_id:
            raise Conflict(f"The draft is {draft.status}: only a succeeded draft can be rendered.",
                           code="draft_not_succeeded", details={"status": draft.status})
        if self.clock.now() - epoch_of(draft.created_at) >= capabilities.VIDEO_TASK_RETENTION_S:
            raise Conflict(f"Ark keeps a draft for {capabilities.VIDEO_TASK_RETENTION_S // 86400} days and this one is "
                           "older: make a new draft.",
                           code="draft_expired")
        model = catalog.get_model(draft.model_id)
        entry = catalog.ark_model_of(model)
        if entry is None or entry.key != draft.family or entry.video is None or not entry.video.draft:
            raise Conflict(f"Model {model.model_id!r} no longer calls the model that made the draft.",
                           code="draft_model_changed")
        render = parse(RenderRequest, {} if raw_body is None else raw_body, context={
            "ark_model": entry, "webhook_loopback": self.settings.webhook_allow_loopback})
        request = VideoTaskRequest.model_construct(
            type="video", model_id=draft.model_id, prompt=draft.prompt, images=[], references=[],
            params=render.params, webhook_url=render.webhook_url, webhook_events=render.webhook_events)
        return self._accept(principal, model, request, {"render": draft.task_id, "body": raw_body}, key,
                            render_of=draft)

    def _accept(
        self,
        principal: Principal,
        model: ModelRecord,
        request: ImageTaskRequest | VideoTaskRequest,
        raw_body: Any,
        key: str | None,
        render_of: TaskRecord | None = None,
    ) -> Created:
        # Scoped to the account: a new account with a deleted one's name replays nothing of it.
        idempotency_id = idempotency.scoped(principal.user_id, idempotency_key(key))
        fingerprint = idempotency.fingerprint(raw_body)
        if idempotency_id:
            replay = self._replay(idempotency_id, fingerprint)
            if replay:
                return replay
        # Before anything of the task is stored; a replay above is not counted again.
        self.rate_limit.take(principal.user_id, principal.requests_per_minute)

        if not model.enabled:
            raise Conflict(f"Model {model.model_id!r} is disabled.", code="model_disabled")
        if model.type != request.type:
            raise ValidationFailed(
                f"Model {model.model_id!r} makes {model.type}s, not {request.type}s.",
                code="type_mismatch",
                details=[{"field": "type", "message": f"model {model.model_id!r} is a {model.type} model"}],
            )
        entry = catalog.ark_model_of(model)
        if entry is None:
            raise Conflict(f"Model {model.model_id!r} calls a model arkflow does not know; an administrator needs "
                           "to set its upstream.", code="model_unconfigured")
        status = catalog.status_of(model)
        if status.status == "retired":
            raise Conflict(f"Model {model.model_id!r} was retired by its provider" + (
                f"; use {status.replacement} instead." if status.replacement else "."),
                code="model_retired", details={"replacement": status.replacement})

        task_id = ids.new_task_id()
        observability.name_task(task_id)  # the request's remaining lines name the task it creates
        queue_seq, slots_full = slots.take_queue_number(model.model_id)
        now = self.clock.now()
        created_at = iso(now)
        counters = quota.counters(model, principal.user_id, now, self.settings.quota_timezone)
        warnings = catalog.warnings_of(model)

        images = self._store_images(task_id, principal, request)
        references = self._store_references(task_id, principal, request)
        params = catalog.params_of(request, model.defaults or {}, entry)
        if render_of is not None:
            params = {key: value for key, value in params.items() if key in RENDER_FIELDS}
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
            references=references or None,
            params=params,
            render_of=render_of.task_id if render_of else None,
            draft_external_id=render_of.external_id if render_of else None,
            upstream_model=capabilities.ark_model_id(entry, catalog.provider(), model.upstream_model),
            family=entry.key,
            warnings=warnings or None,
            price=model.price,
            lane=model.lane,
            created_at=created_at,
            updated_at=created_at,
            created_key=f"{created_at}#{task_id}",
            list_shard=f"shard-{int(task_id[-2:], 36) % TASK_LIST_SHARDS}",
            queued_model=model.model_id,
            queue_seq=queue_seq,
            quota_keys=[counter.key for counter in counters],
            webhook_url=request.webhook_url,
            webhook_events=(list(request.webhook_events or DEFAULT_EVENTS) if request.webhook_url else None),
        )
        response: dict[str, Any] = {"id": task_id, "status": statemachine.QUEUED}
        if render_of is not None:
            response["render_of"] = render_of.task_id
        if warnings:
            response["warnings"] = warnings
        stored = [*images, *(reference["url"] for reference in references)]
        try:
            replay, parked = self._commit(task, model, counters, idempotency_id, fingerprint, response, now,
                                          park=slots_full)
        except BaseException:
            self._delete_stored_images(stored)
            raise
        if replay:  # a parallel request with the same Idempotency-Key won the race
            self._delete_stored_images(stored)
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
            # The model must still exist, be enabled and call the same upstream when the task is written.
            transaction.condition_check(ModelRecord, model.model_id, condition=(
                (ModelRecord.enabled == True) & catalog.calls_same_upstream(model)))  # noqa: E712
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
            if refreshed.enabled:
                raise Conflict(f"Model {refreshed.model_id!r} changed its upstream while the task was created; "
                               "send it again.", code="model_changed") from exc
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
        inline = [*request.images, *(ref.url for ref in getattr(request, "references", [])
                                     if isinstance(ref.url, ImageRef))]
        if not self.settings.media_bucket and sum(len(image.data or b"") for image in inline
                                                  if image.kind == "inline") > MAX_INLINE_BYTES_IN_ITEM:
            raise PayloadTooLarge(
                "Inline images are too large for this deployment; upload them through /api/uploads."
            )
        return [self._store_image(task_id, principal, index, image, request.type)
                for index, image in enumerate(request.images)]

    def _store_image(self, task_id: str, principal: Principal, index: int, image: ImageRef, task_type: TaskType,
                     field: str | None = None) -> str:
        """One input image as the task keeps it: a URL as given, an upload or inline bytes in the bucket (or, with
        no bucket, inline in the task)."""
        if image.kind == "url":
            return image.url or ""
        if image.kind == "upload":
            return self._attach_upload(principal, task_id, index, image, task_type, field)
        assert image.data is not None and image.content_type is not None
        if self.settings.media_bucket:
            key = storage.input_key(task_id, index, image.content_type)
            return storage.store_bytes(self.s3, self.settings.media_bucket, key, image.data, image.content_type)
        return storage.data_uri(image.content_type, image.data)

    def _store_references(self, task_id: str, principal: Principal,
                          request: ImageTaskRequest | VideoTaskRequest) -> list[dict[str, str]]:
        """A video's reference media as stored: images like frames (after them in the task's inputs), video and
        audio as the URLs given."""
        if not isinstance(request, VideoTaskRequest):
            return []
        stored = []
        for index, reference in enumerate(request.references):
            url = reference.url
            if isinstance(url, ImageRef):
                url = self._store_image(task_id, principal, len(request.images) + index, url, "video",
                                        field=f"references[{index}].url")
            stored.append({"type": reference.type, "url": url})
        return stored

    def _attach_upload(
        self, principal: Principal, task_id: str, index: int, image: ImageRef, task_type: TaskType,
        field: str | None = None,
    ) -> str:
        assert image.upload_id is not None
        problem = reference_image_problem if task_type == "image" else frame_image_problem
        return self.uploads.attach(principal.user_id, image.upload_id, task_id, index, problem, field)

    def _delete_stored_images(self, refs: list[str]) -> None:
        for ref in refs:
            if storage.is_s3_ref(ref) and "/tasks/" in ref:
                bucket, key = storage.split_s3_ref(ref)
                self.s3.delete_object(Bucket=bucket, Key=key)
