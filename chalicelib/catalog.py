"""The models admins configure: which Ark model each calls, its concurrency and its daily quota."""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, PynamoDBException, UpdateError

from chalicelib import db, first_run, quota, slots
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import ModelRecord, TaskRecord, optional_int
from chalicelib.errors import Conflict, NotFound, Unavailable, ValidationFailed
from chalicelib.resources import DEFAULT_MODELS, default_lane_for, lane_named
from chalicelib.settings import get_settings
from chalicelib.validation import MODEL_DEFAULTS, ModelCreate, ModelUpdate


def get_model(model_id: str) -> ModelRecord:
    try:
        return ModelRecord.get(model_id, consistent_read=True)
    except DoesNotExist as exc:
        raise _model_not_found(model_id) from exc


def _model_not_found(model_id: str) -> NotFound:
    return NotFound(f"No model named {model_id!r}.", code="model_not_found")


def _raise_unless_condition_failed(error: PynamoDBException) -> None:
    """Only a false condition says the model exists (or does not); any other failure is a store to retry."""
    if not db.condition_failed(error):
        raise Unavailable("The model could not be saved; try again.", headers={"Retry-After": "1"}) from error


def list_models(enabled_only: bool = False) -> list[ModelRecord]:
    # A handful of models: a scan of this small table is cheaper than maintaining an index.
    models = sorted(ModelRecord.scan(), key=lambda model: model.model_id)
    return [model for model in models if model.enabled or not enabled_only]


def _resolve_lane(model_type: str, lane: str | None) -> str:
    if lane is None:
        return default_lane_for(model_type).name  # type: ignore[arg-type]
    # The schemas admit only lane names that exist (`validation.LaneName`).
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
        _raise_unless_condition_failed(exc)
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
    actions = [ModelRecord.updated_at.set(iso(clock.now()))]
    for field, value in changes.items():
        attribute = getattr(ModelRecord, field)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    try:
        model.update(actions=actions, condition=ModelRecord.model_id.exists())
    except UpdateError as exc:
        _raise_unless_condition_failed(exc)
        raise _model_not_found(model_id) from exc
    return model


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
    try:
        model.delete(condition=ModelRecord.model_id.exists())
    except DeleteError as exc:
        _raise_unless_condition_failed(exc)
        raise _model_not_found(model_id) from exc


def usage_today(model: ModelRecord, now: float) -> dict[str, Any]:
    settings = get_settings()
    day = quota.quota_day(now, settings.quota_timezone)
    used = quota.used(quota.model_counter_key(model.model_id, day))
    return {
        "day": day,
        "timezone": settings.quota_timezone,
        "used": used,
        "limit": int(model.daily_quota),
        "remaining": max(0, int(model.daily_quota) - used),
    }


def public_body(model: ModelRecord) -> dict[str, Any]:
    """What any logged-in user sees: no upstream IDs, no limits."""
    return {
        "model_id": model.model_id,
        "type": model.type,
        "display_name": model.display_name,
        "enabled": model.enabled,
        "defaults": model.defaults or {},
    }


def admin_body(model: ModelRecord, now: float) -> dict[str, Any]:
    return {
        **public_body(model),
        "upstream_model": model.upstream_model,
        "concurrency": int(model.concurrency),
        "daily_quota": int(model.daily_quota),
        "user_daily_quota": optional_int(model.user_daily_quota),
        "max_running_per_user": optional_int(model.max_running_per_user),
        "lane": model.lane,
        "created_at": model.created_at,
        "updated_at": model.updated_at,
        "usage_today": usage_today(model, now),
        "slots_in_use": slots.in_use(model.model_id),
    }


def default_model_marker(model_id: str) -> str:
    return f"default-model#{model_id}"


def ensure_default_models(clock: Clock = SYSTEM_CLOCK) -> list[str]:
    """Create each default model once per deployment (`chalicelib.first_run`); returns the ids created.

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
