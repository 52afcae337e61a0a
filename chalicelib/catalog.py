"""The models admins configure (which Ark model each calls, its concurrency and daily quota), their defaults and how
defaults merge into a request, and the default models a deployment starts with.

Each model calls one model of the capability table (`chalicelib.ark.capabilities`), by its Ark id or through an
endpoint (`ep-...`, with `family` naming the table's model it serves): the table says what its requests may carry
and where it is in its lifecycle at the deployment's provider. A model whose upstream changes takes its queued
tasks along, once each is judged against the new capabilities (docs/api.md, "Models").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from chalicelib.ark import capabilities
from chalicelib.ark.capabilities import ArkModel, ModelStatus, Provider
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.errors import Conflict, NotFound, ValidationFailed, error_object
from chalicelib.resources import DEFAULT_MODELS, default_lane_for, lane_named
from chalicelib.schemas import (
    MODEL_DEFAULTS,
    ImageTaskRequest,
    ModelCreate,
    ModelPrice,
    ModelUpdate,
    VideoTaskRequest,
    problems_failure,
)
from chalicelib.settings import get_settings
from chalicelib.store import first_run, quota, slots, statemachine, writes
from chalicelib.store.errors import StaleTask, write_error
from chalicelib.store.records import ModelRecord, TaskRecord, optional_int
from chalicelib.tasks import checks, costs

log = logging.getLogger(__name__)

# The error of a queued task its model's new upstream cannot take (`PUT /api/admin/models/{id}` with `force`).
INCOMPATIBLE_UPSTREAM = "incompatible_upstream"
# How many of the incompatible tasks a refused change names.
NAMED_TASKS = 20
# How often a queued task that keeps changing is judged again while its model's upstream changes.
MOVE_ATTEMPTS = 3


def get_model(model_id: str) -> ModelRecord:
    try:
        return ModelRecord.get(model_id, consistent_read=True)
    except DoesNotExist as exc:
        raise _model_not_found(model_id) from exc


def find_model(model_id: str) -> ModelRecord | None:
    try:
        return ModelRecord.get(model_id, consistent_read=True)
    except DoesNotExist:
        return None


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


# --- the capability table's view of a model ---------------------------------------------------------------------


def provider() -> Provider:
    """The provider this deployment calls (from `ARK_BASE_URL`)."""
    return capabilities.provider_of(get_settings().ark_base_url)


# What a model made before the table (no `family`) called through an endpoint: the one model of its type arkflow
# knew then.
LEGACY_FAMILIES = {"image": "seedream-4.5", "video": "seedance-1.0-pro"}


def ark_model_of(model: ModelRecord) -> ArkModel | None:
    """The table's model `model` calls; None only for a model made before the table with an id it lacks."""
    if model.family:
        return capabilities.find(model.family)
    if capabilities.is_endpoint(model.upstream_model):
        return capabilities.find(LEGACY_FAMILIES.get(model.type, ""))
    return capabilities.find(model.upstream_model)


def status_of(model: ModelRecord) -> ModelStatus:
    entry = ark_model_of(model)
    if entry is None:
        return ModelStatus("active", None, "not in the capability table")
    return capabilities.lifecycle(entry, provider())


def warnings_of(model: ModelRecord) -> list[dict[str, Any]]:
    """`[{code, message, replacement}]` for a model on its way out (none for an active one)."""
    status = status_of(model)
    if status.status == "active":
        return []
    entry = ark_model_of(model)
    name = entry.display_name if entry else model.upstream_model
    instead = ""
    if status.replacement:
        instead = f"; use {capabilities.model(status.replacement).display_name} ({status.replacement}) instead"
    verb = "is deprecated by" if status.status == "deprecated" else "was retired by"
    return [error_object(f"model_{status.status}", f"{name} {verb} its provider{instead}.",
                         replacement=status.replacement)]


def client_capabilities(model: ModelRecord) -> dict[str, Any] | None:
    entry = ark_model_of(model)
    return capabilities.client_capabilities(entry) if entry else None


def resolve_upstream(upstream_model: str, family: str | None, model_type: str) -> ArkModel:
    """The table's model an upstream names (an Ark id, or an endpoint with `family`); 400 naming the field
    otherwise."""
    problems: list[checks.Problem] = []
    entry: ArkModel | None = None
    known = ", ".join(model.key for model in capabilities.MODELS)
    if capabilities.is_endpoint(upstream_model):
        if family is None:
            problems.append(checks.Problem("family", "family_required",
                                           f"name the model the endpoint serves: one of {known}"))
        elif (entry := capabilities.find(family)) is None:
            problems.append(checks.Problem("family", "unknown_family", f"is not a known model: one of {known}"))
    elif (entry := capabilities.find(upstream_model)) is None:
        problems.append(checks.Problem(
            "upstream_model", "unknown_upstream",
            "is neither the Ark id of a known model (GET /api/admin/ark-models lists them) nor an ep-... "
            "endpoint id"))
    elif family is not None and capabilities.find(family) is not entry:
        problems.append(checks.Problem("family", "family_mismatch", f"{upstream_model} is {entry.key}"))
    field = "family" if capabilities.is_endpoint(upstream_model) else "upstream_model"
    if entry is not None and entry.api != model_type:
        problems.append(checks.Problem(field, "type_mismatch", f"{entry.key} makes {entry.api}s, not {model_type}s"))
    # A retired model takes no task: every task sent to it, the queued ones it would take along first, would fail.
    if entry is not None and (status := capabilities.lifecycle(entry, provider())).status == "retired":
        instead = f"; use {status.replacement} instead" if status.replacement else ""
        problems.append(checks.Problem(field, "upstream_retired",
                                       f"{entry.display_name} was retired by {provider()}{instead}"))
    if problems or entry is None:
        raise problems_failure(problems)
    return entry


def defaults_problems(entry: ArkModel, defaults: Mapping[str, Any]) -> list[checks.Problem]:
    """What the model cannot take of the defaults an admin set (each named `defaults.<field>`)."""
    if entry.image is not None:
        return checks.image_problems(entry, references=0, fields=defaults, prefix="defaults.")
    return checks.video_problems(entry, prompt=True, frames=0, references=[], params=defaults, prefix="defaults.",
                                 inputs=False)


def task_problems(entry: ArkModel, task: TaskRecord) -> list[checks.Problem]:
    """What `entry` cannot take of a stored task (its prompt, inputs and params as they will be sent)."""
    params = task.params or {}
    if entry.image is not None:
        return checks.image_problems(entry, references=len(task.images or []), fields=params)
    if task.render_of:
        if task.family == entry.key:
            return []
        return [checks.Problem("render_of", "render", "a draft renders only on the model that made it")]
    return checks.video_problems(entry, prompt=bool(task.prompt), frames=len(task.images or []),
                                 references=[ref["type"] for ref in task.references or []], params=params)


def checked_upstream(request: ModelCreate) -> ArkModel:
    """The table's model a new model calls, once its upstream and defaults are found to fit; 400 otherwise."""
    entry = resolve_upstream(request.upstream_model, request.family, request.type)
    defaults = request.defaults.model_dump(exclude_none=True) if request.defaults else None
    if defaults and (problems := defaults_problems(entry, defaults)):
        raise problems_failure(problems)
    return entry


def checked_price(model_type: str, price: ModelPrice | None) -> dict[str, Any] | None:
    """The price as stored, once its unit is found to be one the model's type is billed in; 400 otherwise."""
    if price is None:
        return None
    units = costs.UNITS_BY_TYPE[model_type]
    if price.unit not in units:
        raise problems_failure([checks.Problem(f"price.{price.unit}", "price_unit",
                                               f"a {model_type} model is priced {' or '.join(units)}")])
    return price.stored()


def _new_model(request: ModelCreate, clock: Clock) -> ModelRecord:
    entry = checked_upstream(request)
    defaults = request.defaults.model_dump(exclude_none=True) if request.defaults else None
    price = checked_price(request.type, request.price)
    now = iso(clock.now())
    return ModelRecord(
        request.model_id,
        type=request.type,
        upstream_model=request.upstream_model,
        family=entry.key,
        display_name=request.display_name,
        concurrency=request.concurrency,
        daily_quota=request.daily_quota,
        user_daily_quota=request.user_daily_quota,
        max_running_per_user=request.max_running_per_user,
        lane=_resolve_lane(request.type, request.lane),
        enabled=request.enabled,
        defaults=defaults,
        price=price,
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
    force = bool(changes.pop("force", False))
    if "lane" in changes:
        changes["lane"] = _resolve_lane(model.type, changes["lane"])
    if "defaults" in changes:
        if request.defaults is not None and not isinstance(request.defaults, MODEL_DEFAULTS[model.type]):
            raise ValidationFailed(
                "Invalid model configuration.",
                details=[{"field": "defaults", "message": f"these are not defaults of a {model.type} model"}],
            )
        changes["defaults"] = request.defaults.model_dump(exclude_none=True) if request.defaults else None
    if "price" in changes:
        changes["price"] = checked_price(model.type, request.price)
    moved: ArkModel | None = None
    if _repeats_upstream(model, changes):
        # An edit that restates the upstream (as the admin page's does) moves nothing and keeps the model's flag.
        changes.pop("upstream_model", None)
        changes.pop("family", None)
    if "upstream_model" in changes or "family" in changes:
        upstream = changes.get("upstream_model", model.upstream_model)
        family = changes.get("family") if "family" in changes or "upstream_model" in changes else model.family
        moved = resolve_upstream(upstream, family, model.type)
        changes["family"] = moved.key
        changes["upstream_unavailable"] = None  # judged again by the next call
    if force and moved is None:  # restating the upstream moves nothing either: nothing would be forced
        raise problems_failure([checks.Problem("force", "force_without_upstream_change",
                                               "force only applies to an upstream change")])
    entry = moved or ark_model_of(model)
    defaults = changes.get("defaults", model.defaults)
    if entry is not None and defaults and (problems := defaults_problems(entry, defaults)):
        raise problems_failure(problems)
    if moved is not None and not force:
        incompatible = [task.task_id for task in _queued_tasks(model_id) if task_problems(moved, task)]
        if incompatible:
            raise Conflict(
                f"{len(incompatible)} queued task(s) of {model_id!r} ask for what {moved.display_name} cannot do; "
                "send force: true to fail them (their quota is given back), or wait for them to run.",
                code="incompatible_queued_tasks",
                details={"count": len(incompatible), "task_ids": incompatible[:NAMED_TASKS]},
            )
    model = _write_changes(model, changes, clock)
    if moved is not None:
        _move_queued_tasks(model, moved, clock)
    return model


def calls_same_upstream(model: ModelRecord) -> Condition:
    """The model (as stored) still calls the upstream `model` was read with."""
    same_family = ModelRecord.family == model.family if model.family else ModelRecord.family.does_not_exist()
    return (ModelRecord.upstream_model == model.upstream_model) & same_family


def _model_changed(model_id: str) -> Conflict:
    return Conflict(f"Model {model_id!r} changed its upstream while this change was made; read it and send the "
                    "change again.", code="model_changed", headers={"Retry-After": "1"})


def _repeats_upstream(model: ModelRecord, changes: Mapping[str, Any]) -> bool:
    """Whether the update names the upstream the model calls already (the same id, and its family or none)."""
    if changes.get("upstream_model", model.upstream_model) != model.upstream_model:
        return False
    family = changes.get("family")
    if family is None:
        return True
    # A model made before the table gets the family it is given stored.
    return model.family is not None and capabilities.find(family) is capabilities.find(model.family)


def _write_changes(model: ModelRecord, changes: dict[str, Any], clock: Clock) -> ModelRecord:
    """Write `changes` while the model is as it was read: they were judged against its upstream (the defaults, the
    queued tasks a move takes along; of two changes of upstream at once only one may win), and its slot record's
    limits are written from it in the same transaction (docs/design.md, "Parked tasks"). The model as written."""
    actions = [ModelRecord.updated_at.set(iso(clock.now()))]
    for field, value in changes.items():
        attribute = getattr(ModelRecord, field)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    concurrency = changes.get("concurrency", model.concurrency)
    user_cap = changes.get("max_running_per_user", model.max_running_per_user)

    def write(transaction: TransactWrite) -> None:
        transaction.update(model, actions=actions, condition=ModelRecord.model_id.exists()
                           & calls_same_upstream(model) & (ModelRecord.updated_at == model.updated_at))
        slots.configure_in(transaction, model.model_id, int(concurrency), optional_int(user_cap))

    try:
        writes.write_transaction(write)
    except TransactWriteError as exc:
        if not writes.condition_failed(exc):  # only a false condition says the model changed (or is gone)
            raise  # the store failing: the API answers 503 for it (`chalicelib.api.http.store_unavailable`)
        if find_model(model.model_id) is None:
            raise _model_not_found(model.model_id) from exc
        raise _model_changed(model.model_id) from exc
    return get_model(model.model_id)


def _queued_tasks(model_id: str) -> list[TaskRecord]:
    return [TaskRecord.get(task.task_id, consistent_read=True)
            for task in TaskRecord.queued_by_model.query(model_id)]


class _ModelMovedOn(Exception):
    """The model no longer calls the upstream being moved to: the change that replaced it moves the tasks."""


def _move_queued_tasks(model: ModelRecord, entry: ArkModel, clock: Clock) -> None:
    """Every task still queued for `model` goes to its new upstream, or fails (its quota given back) when the new
    upstream cannot take it. A task a worker claims meanwhile runs as it was claimed.

    Each task is written only as it was read (queued, on the upstream it was read with), and a move only while
    the model still calls `model`'s upstream: a later change of upstream, whose own move may have passed the task
    already, is never undone by this one."""
    ark_id = capabilities.ark_model_id(entry, provider(), model.upstream_model)
    for queued in _queued_tasks(model.model_id):
        task: TaskRecord | None = queued
        try:
            for _attempt in range(MOVE_ATTEMPTS):
                if task is None or task.status != statemachine.QUEUED or (
                        task.upstream_model == ark_id and task.family == entry.key):
                    break
                try:
                    _move_task(model, entry, ark_id, task, clock)
                    break
                except StaleTask:  # another change of the task (or of its upstream) came first: judge it again
                    task = _find_task(task.task_id)
            else:
                log.warning("task %s kept changing while its model's upstream changed", queued.task_id)
        except _ModelMovedOn:
            log.info("model %s changed its upstream again while its tasks moved", model.model_id)
            return


def _move_task(model: ModelRecord, entry: ArkModel, ark_id: str, task: TaskRecord, clock: Clock) -> None:
    as_read = TaskRecord.upstream_model == task.upstream_model
    as_read &= TaskRecord.family == task.family if task.family else TaskRecord.family.does_not_exist()
    if problems := task_problems(entry, task):
        if not _still_calls(model):
            raise _ModelMovedOn
        named = ", ".join(f"{problem.field}: {problem.message}" for problem in problems)
        statemachine.transition(task, statemachine.FAILED, clock=clock, condition=as_read, actions=[
            TaskRecord.error.set(error_object(INCOMPATIBLE_UPSTREAM, f"The model now calls {entry.display_name}, "
                                                                     f"which cannot take this task ({named})."))])
        return

    def move(transaction: TransactWrite) -> None:
        transaction.condition_check(ModelRecord, model.model_id, condition=calls_same_upstream(model))
        transaction.update(task, condition=(TaskRecord.status == statemachine.QUEUED) & as_read, actions=[
            TaskRecord.updated_at.set(iso(clock.now())), TaskRecord.upstream_model.set(ark_id),
            TaskRecord.family.set(entry.key)])

    try:
        writes.write_transaction(move)
    except TransactWriteError as exc:
        if not writes.condition_failed(exc):
            raise write_error(exc) from exc
        model_check, _task_update = exc.cancellation_reasons  # condition checks are sent first
        if model_check is not None and model_check.code == "ConditionalCheckFailed":
            raise _ModelMovedOn from exc
        raise StaleTask("The task changed while it moved.") from exc


def _still_calls(model: ModelRecord) -> bool:
    current = find_model(model.model_id)
    return current is not None and (current.upstream_model, current.family) == (model.upstream_model, model.family)


def _find_task(task_id: str) -> TaskRecord | None:
    try:
        return TaskRecord.get(task_id, consistent_read=True)
    except DoesNotExist:
        return None


def flag_upstream_unavailable(task: TaskRecord, code: str, now: float) -> None:
    """Mark the task's model as unreachable at Ark (`upstream_unavailable: {at, code}`), unless its upstream changed
    since the task was sent. Best effort: the task's failure is what counts."""
    condition = ModelRecord.model_id.exists()
    if task.family:
        condition &= ModelRecord.family == task.family
    try:
        flag = {"at": iso(now), "code": code}
        ModelRecord(task.model_id).update(actions=[ModelRecord.upstream_unavailable.set(flag)], condition=condition)
        _recently_read.pop(task.model_id, None)  # this container's next success clears it at once
    except UpdateError as exc:
        if not writes.condition_failed(exc):
            log.warning("could not flag model %s as unavailable: %s", task.model_id, exc)


# model id -> (monotonic time read, the model): lanes learn of an unavailable flag without a read per task.
_recently_read: dict[str, tuple[float, ModelRecord]] = {}
RECENT_MODEL_S = 60.0


def recent_model(model_id: str) -> ModelRecord | None:
    """The model as read here within the last minute (read again when older): what a lane needs to know of it
    besides its limits, which the slot record carries. None when it no longer exists."""
    now = time.monotonic()
    cached = _recently_read.get(model_id)
    if cached is not None and now - cached[0] < RECENT_MODEL_S:
        return cached[1]
    model = find_model(model_id)
    if model is not None:
        _recently_read[model_id] = (now, model)
    return model


def forget_recent_models() -> None:
    """A new container's start: no model read before."""
    _recently_read.clear()


def clear_upstream_unavailable(model: ModelRecord | None) -> None:
    """A call Ark accepted: the model is reachable again (only a flagged model is written)."""
    if model is None or not model.upstream_unavailable:
        return
    try:
        model.update(actions=[ModelRecord.upstream_unavailable.remove()], condition=ModelRecord.model_id.exists())
    except UpdateError as exc:
        log.warning("could not clear the unavailable flag of model %s: %s", model.model_id, exc)
    _recently_read.pop(model.model_id, None)


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


def params_of(request: ImageTaskRequest | VideoTaskRequest, defaults: dict[str, Any],
              entry: ArkModel) -> dict[str, Any]:
    """What Ark will be sent: the model's defaults, overlaid by what the request set."""
    if isinstance(request, ImageTaskRequest):
        requested = {key: value for key, value in request.fields().items() if value is not None}
    else:
        requested = request.params.model_dump(exclude_none=True)
    params = {**_applicable_defaults(request, defaults, requested, entry), **requested}
    if requested.get("draft"):
        params["resolution"] = capabilities.DRAFT_RESOLUTION  # the only one a draft is made at
    return params


def _applicable_defaults(
    request: ImageTaskRequest | VideoTaskRequest, defaults: dict[str, Any], requested: dict[str, Any],
    entry: ArkModel,
) -> dict[str, Any]:
    """The defaults that fit this request: none may make a valid request one Ark refuses or crops."""
    applicable = dict(defaults)
    if isinstance(request, ImageTaskRequest):
        if "max_images" in applicable and entry.image is not None:  # reference and generated images share a limit
            room = entry.image.max_total_images - len(request.images)
            applicable["max_images"] = min(applicable["max_images"], room)
    else:
        if "frames" in requested:  # a request's frame count replaces any duration
            applicable.pop("duration", None)
        if request.images or request.references:  # Ark fits the ratio to the inputs unless the request says
            applicable.pop("ratio", None)
    # A default the request makes invalid (a 1080p default for a draft, a default the model lacks) is left out.
    return {key: value for key, value in applicable.items()
            if not _problems_with(request, entry, {**requested, key: value}, key)}


def _problems_with(request: ImageTaskRequest | VideoTaskRequest, entry: ArkModel, fields: dict[str, Any],
                   key: str) -> bool:
    if isinstance(request, ImageTaskRequest):
        problems = checks.image_problems(entry, references=len(request.images), fields=fields)
        return any(problem.field == key for problem in problems)
    problems = checks.video_problems(entry, prompt=request.prompt is not None, frames=len(request.images),
                                     references=[ref.type for ref in request.references], params=fields)
    return any(problem.field == f"params.{key}" for problem in problems)


def default_model_marker(model_id: str) -> str:
    return f"default-model#{model_id}"


def ensure_default_models(clock: Clock = SYSTEM_CLOCK, *, enable_all: bool = False) -> list[str]:
    """Create each default model once per deployment (`chalicelib.store.first_run`); returns the ids created.

    Each calls its table model's id at the deployment's provider. Only those `enabled_when_deployed` start
    enabled (Ark activates models per account: the rest wait for an admin), unless `enable_all` (the local
    stack, whose simulator serves every model). A default whose id already names a model is left as it is; one
    that was created before and deleted since is not created again.
    """
    markers = {default.model_id: default_model_marker(default.model_id) for default in DEFAULT_MODELS}
    done = first_run.marked(list(markers.values()))
    created = []
    for default in DEFAULT_MODELS:
        if markers[default.model_id] in done:
            continue
        entry = capabilities.model(default.family)
        if capabilities.lifecycle(entry, provider()).status == "retired":
            continue  # an admin chooses its replacement
        at_provider = entry.at(provider())
        request = ModelCreate(
            model_id=default.model_id,
            type=default.type,
            upstream_model=at_provider.model_id if at_provider else default.upstream_model,
            display_name=default.display_name,
            concurrency=default.concurrency,
            daily_quota=default.daily_quota,
            enabled=enable_all or default.enabled_when_deployed,
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
