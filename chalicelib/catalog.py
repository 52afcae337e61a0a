"""The models admins configure (which Ark model each calls, its concurrency and daily quota), their defaults and how
defaults merge into a request, and the default models a deployment starts with.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.ark.limits import IMAGE_MAX_TOTAL_IMAGES
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.errors import Conflict, NotFound, ValidationFailed
from chalicelib.resources import DEFAULT_MODELS, default_lane_for, lane_named
from chalicelib.schemas import MODEL_DEFAULTS, ImageTaskRequest, ModelCreate, ModelUpdate, VideoTaskRequest
from chalicelib.store import first_run, quota, slots, writes
from chalicelib.store.records import ModelRecord, TaskRecord, optional_int

# Rounds of "read the model, write it with its slot limits" an update tries when other changes land in between.
MODEL_WRITE_ROUNDS = 3


def get_model(model_id: str) -> ModelRecord:
    try:
        return ModelRecord.get(model_id, consistent_read=True)
    except DoesNotExist as exc:
        raise _model_not_found(model_id) from exc


def _model_not_found(model_id: str) -> NotFound:
    return NotFound(f"No model named {model_id!r}.", code="model_not_found")


def list_models(enabled_only: bool = False) -> list[ModelRecord]:
    # A handful of models: a scan of this small table is cheaper than maintaining an index.
    models = sorted(ModelRecord.scan(), key=lambda model: model.model_id)
    return [model for model in models if model.enabled or not enabled_only]


def _resolve_lane(model_type: str, lane: str | None) -> str:
    if lane is None:
        return default_lane_for(model_type).name  # type: ignore[arg-type]
    # The schemas admit only lane names that exist (`schemas.LaneName`).
    served = lane_named(lane).task_type
    if served != model_type:
        raise ValidationFailed(
            "Invalid model configuration.",
            details=[{"field": "lane", "message": f"lane {lane!r} serves {served} tasks"}],
        )
    return lane


def _new_model(request: ModelCreate, clock: Clock) -> ModelRecord:
    now = iso(clock.now())
    return ModelRecord(
        request.model_id,
        type=request.type,
        upstream_model=request.upstream_model,
        display_name=request.display_name,
        concurrency=request.concurrency,
        daily_quota=request.daily_quota,
        user_daily_quota=request.user_daily_quota,
        max_running_per_user=request.max_running_per_user,
        lane=_resolve_lane(request.type, request.lane),
        enabled=request.enabled,
        defaults=request.defaults.model_dump(exclude_none=True) if request.defaults else None,
        created_at=now,
        updated_at=now,
    )


def create_model(request: ModelCreate, clock: Clock = SYSTEM_CLOCK) -> ModelRecord:
    model = _new_model(request, clock)
    try:
        model.save(condition=ModelRecord.model_id.does_not_exist())
    except PutError as exc:
        if not writes.condition_failed(exc):  # only a false condition says the model exists (or does not)
            raise  # the store failing: the API answers 503 for it (`chalicelib.api.http.store_unavailable`)
        raise Conflict(f"A model named {request.model_id!r} already exists.", code="model_exists") from exc
    return model


def update_model(model_id: str, request: ModelUpdate, clock: Clock = SYSTEM_CLOCK) -> ModelRecord:
    model = get_model(model_id)
    changes = request.model_dump(exclude_unset=True)
    if "lane" in changes:
        changes["lane"] = _resolve_lane(model.type, changes["lane"])
    if "defaults" in changes:
        if request.defaults is not None and not isinstance(request.defaults, MODEL_DEFAULTS[model.type]):
            raise ValidationFailed(
                "Invalid model configuration.",
                details=[{"field": "defaults", "message": f"these are not defaults of a {model.type} model"}],
            )
        changes["defaults"] = request.defaults.model_dump(exclude_none=True) if request.defaults else None
    for _ in range(MODEL_WRITE_ROUNDS):
        actions = [ModelRecord.updated_at.set(iso(clock.now()))]
        for field, value in changes.items():
            attribute = getattr(ModelRecord, field)
            actions.append(attribute.remove() if value is None else attribute.set(value))
        limits = {"concurrency": model.concurrency, "max_running_per_user": model.max_running_per_user,
                  **{key: value for key, value in changes.items() if key in ("concurrency", "max_running_per_user")}}
        read_at = model.updated_at

        def write(transaction: TransactWrite, model: ModelRecord = model, actions: list[Any] = actions,
                  limits: dict[str, Any] = limits, read_at: str | None = read_at) -> None:
            # The slot record's limits are written from the model as read: only if no other change came between.
            transaction.update(model, actions=actions, condition=ModelRecord.model_id.exists()
                               & (ModelRecord.updated_at == read_at))
            slots.configure_in(transaction, model_id, int(limits["concurrency"]),
                               optional_int(limits["max_running_per_user"]))

        try:
            writes.write_transaction(write)
        except TransactWriteError as exc:
            if not writes.condition_failed(exc):  # only a false condition says the model changed (or is gone)
                raise  # the store failing: the API answers 503 for it (`chalicelib.api.http.store_unavailable`)
            model = get_model(model_id)  # changed meanwhile (or deleted: NotFound): apply the change to it
            continue
        return get_model(model_id)
    raise Conflict(f"Model {model_id!r} keeps changing; try again.", code="model_changed")


def has_unfinished_tasks(model_id: str) -> bool:
    queued = next(iter(TaskRecord.queued_by_model.query(model_id, limit=1)), None)
    # A task is `running` only while it holds one of its model's slots.
    return queued is not None or slots.in_use(model_id) > 0


def delete_model(model_id: str) -> None:
    model = get_model(model_id)
    if has_unfinished_tasks(model_id):
        raise Conflict(
            f"Model {model_id!r} has unfinished tasks; disable it and wait for them to end.",
            code="model_in_use",
        )
    def delete(transaction: TransactWrite) -> None:
        transaction.delete(model, condition=ModelRecord.model_id.exists())
        slots.unconfigure_in(transaction, model_id)  # an acquire for it now looks the model up, and finds none

    try:
        writes.write_transaction(delete)
    except TransactWriteError as exc:
        if not writes.condition_failed(exc):  # only a false condition says the model exists (or does not)
            raise  # the store failing: the API answers 503 for it (`chalicelib.api.http.store_unavailable`)
        raise _model_not_found(model_id) from exc


def usage_today(model: ModelRecord, now: float, timezone: str) -> dict[str, Any]:
    day = quota.quota_day(now, timezone)
    used = quota.used(quota.model_counter_key(model.model_id, day))
    return {
        "day": day,
        "timezone": timezone,
        "used": used,
        "limit": int(model.daily_quota),
        "remaining": max(0, int(model.daily_quota) - used),
    }


def params_of(request: ImageTaskRequest | VideoTaskRequest, defaults: dict[str, Any]) -> dict[str, Any]:
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


def default_model_marker(model_id: str) -> str:
    return f"default-model#{model_id}"


def ensure_default_models(clock: Clock = SYSTEM_CLOCK) -> list[str]:
    """Create each default model once per deployment (`chalicelib.store.first_run`); returns the ids created.

    A default whose id already names a model is left as it is; one that was created before and deleted since is
    not created again.
    """
    markers = {default.model_id: default_model_marker(default.model_id) for default in DEFAULT_MODELS}
    done = first_run.marked(list(markers.values()))
    created = []
    for default in DEFAULT_MODELS:
        if markers[default.model_id] in done:
            continue
        request = ModelCreate(
            model_id=default.model_id,
            type=default.type,
            upstream_model=default.upstream_model,
            display_name=default.display_name,
            concurrency=default.concurrency,
            daily_quota=default.daily_quota,
        )
        model = _new_model(request, clock)
        if first_run.create_once(markers[default.model_id], model, ModelRecord.model_id.does_not_exist(), clock):
            created.append(default.model_id)
    return created


@cache
def ensure_default_models_once() -> None:
    """The default models a deployment has never had, created; checked once per container (the call is cached once
    it returns) by the scheduled sweeper, so a fresh stack on AWS gets its models within a minute of its deploy."""
    ensure_default_models()
