"""arkflow's Chalice app: routes and event handlers only; the logic lives in chalicelib/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from chalice import Chalice, Rate
from chalice.app import SQSEvent, WebsocketEvent

from chalicelib import aws, cancel, catalog, lanes, seed, statemachine, status_updates, users, video
from chalicelib.api import Http, RequestContext, json_response
from chalicelib.auth import Authenticator
from chalicelib.clock import SYSTEM_CLOCK
from chalicelib.db import TaskRecord
from chalicelib.resources import LANES, Lane
from chalicelib.results import delete_task
from chalicelib.seed import ensure_first_admin
from chalicelib.settings import get_settings
from chalicelib.sweeper import Sweeper
from chalicelib.tasks import TaskService
from chalicelib.uploads import UploadService
from chalicelib.validation import (
    AdminTaskListQuery,
    ArkCallback,
    LoginRequest,
    ModelCreate,
    ModelUpdate,
    StatusUpdateRequest,
    TaskListQuery,
    UploadRequest,
    UserCreate,
    UserUpdate,
    parse,
    parse_task_request,
)
from chalicelib.ws import LiveUpdates

# Chalice would give the app's logger (named after the app) its own stdout handler at ERROR and stop it
# propagating. Unconfigured, every logger (each module logs under its own `__name__`) propagates to the root
# logger, where Lambda's runtime installs its handler at the function's log level: WARNING and above reach it.
app = Chalice(app_name="arkflow", configure_logs=False)
# A login body is two short strings: anything larger is refused before it is decoded.
LOGIN_MAX_BODY_BYTES = 4096
http = Http(app, Authenticator)


def task_service() -> TaskService:
    return TaskService(s3=aws.s3(), sqs=aws.sqs())


# --- health and sessions -----------------------------------------------------------------------------------


@app.route("/api/health", methods=["GET"])
@http.endpoint("public")
def health(_: RequestContext) -> dict[str, Any]:
    return {"status": "ok"}


@app.route("/api/users/login", methods=["POST"])
@http.endpoint("public")
def login(context: RequestContext) -> dict[str, Any]:
    ensure_first_admin()
    request = parse(LoginRequest, context.json(max_bytes=LOGIN_MAX_BODY_BYTES))
    result = Authenticator().login(request.username, request.password, context.source_address())
    return {"token": result.token, "role": result.role, "expires_at": result.expires_at}


@app.route("/api/users/logout", methods=["POST"])
@http.endpoint()
def logout(context: RequestContext) -> dict[str, Any]:
    Authenticator().logout(context.user, sockets=live_updates())
    return {"status": "logged_out"}


@app.route("/api/users/me", methods=["GET"])
@http.endpoint()
def me(context: RequestContext) -> dict[str, Any]:
    user = users.get_user(context.user.username)
    return {"username": user.username, "user_id": user.user_id, "role": user.role, "created_at": user.created_at}


# --- models ------------------------------------------------------------------------------------------------


@app.route("/api/models", methods=["GET"])
@http.endpoint()
def list_enabled_models(_: RequestContext) -> dict[str, Any]:
    return {"models": [catalog.public_body(model) for model in catalog.list_models(enabled_only=True)]}


@app.route("/api/admin/models", methods=["GET"])
@http.endpoint("admin")
def admin_list_models(_: RequestContext) -> dict[str, Any]:
    now = SYSTEM_CLOCK.now()
    return {"models": [catalog.admin_body(model, now) for model in catalog.list_models()]}


@app.route("/api/admin/models", methods=["POST"])
@http.endpoint("admin")
def admin_create_model(context: RequestContext) -> Any:
    model = catalog.create_model(parse(ModelCreate, context.json()))
    return json_response(201, catalog.admin_body(model, SYSTEM_CLOCK.now()))


@app.route("/api/admin/models/{model_id}", methods=["GET"])
@http.endpoint("admin")
def admin_get_model(_: RequestContext, model_id: str) -> dict[str, Any]:
    return catalog.admin_body(catalog.get_model(model_id), SYSTEM_CLOCK.now())


@app.route("/api/admin/models/{model_id}", methods=["PUT"])
@http.endpoint("admin")
def admin_update_model(context: RequestContext, model_id: str) -> dict[str, Any]:
    model = catalog.update_model(model_id, parse(ModelUpdate, context.json()))
    return catalog.admin_body(model, SYSTEM_CLOCK.now())


@app.route("/api/admin/models/{model_id}", methods=["DELETE"])
@http.endpoint("admin")
def admin_delete_model(_: RequestContext, model_id: str) -> Any:
    catalog.delete_model(model_id)
    return json_response(200, {"deleted": model_id})


# --- users -------------------------------------------------------------------------------------------------


@app.route("/api/admin/users", methods=["GET"])
@http.endpoint("admin")
def admin_list_users(_: RequestContext) -> dict[str, Any]:
    return {"users": [users.user_body(user) for user in users.list_users()]}


@app.route("/api/admin/users", methods=["POST"])
@http.endpoint("admin")
def admin_create_user(context: RequestContext) -> Any:
    return json_response(201, users.user_body(users.create_user(parse(UserCreate, context.json()))))


@app.route("/api/admin/users/{username}", methods=["PUT"])
@http.endpoint("admin")
def admin_update_user(context: RequestContext, username: str) -> dict[str, Any]:
    user = users.update_user(context.user, username, parse(UserUpdate, context.json()), sockets=live_updates())
    return users.user_body(user)


@app.route("/api/admin/users/{username}", methods=["DELETE"])
@http.endpoint("admin")
def admin_delete_user(context: RequestContext, username: str) -> dict[str, Any]:
    users.delete_user(context.user, username, sockets=live_updates())
    return {"deleted": username}


# --- tasks -------------------------------------------------------------------------------------------------


@app.route("/api/tasks", methods=["POST"])
@http.endpoint()
def create_task(context: RequestContext) -> Any:
    body = context.json()
    created = task_service().create(
        context.user, parse_task_request(body), body, context.header("idempotency-key")
    )
    return json_response(created.status_code, created.body)


@app.route("/api/tasks", methods=["GET"])
@http.endpoint()
def list_tasks(context: RequestContext) -> dict[str, Any]:
    service = task_service()
    page, cursor = service.list(parse(TaskListQuery, context.query()), owner=context.user.user_id,
                                present=service.body)
    return {"tasks": page, "next_cursor": cursor}


@app.route("/api/tasks/{task_id}", methods=["GET"])
@http.endpoint()
def get_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    service = task_service()
    return service.body(service.get_own(context.user, task_id), with_queue_position=True)


@app.route("/api/tasks/{task_id}/status", methods=["PUT"])
@http.endpoint("admin_or_service")
def update_task_status(context: RequestContext, task_id: str) -> dict[str, Any]:
    service = task_service()
    task = service.get(task_id)
    request = parse(StatusUpdateRequest, context.json())
    return service.body(status_updates.apply(task, request, sqs=service.sqs, video=video.default_service),
                        for_admin=True)


@app.route("/api/admin/tasks", methods=["GET"])
@http.endpoint("admin")
def admin_list_tasks(context: RequestContext) -> dict[str, Any]:
    service = task_service()
    query = parse(AdminTaskListQuery, context.query())
    page, cursor = service.list(query, owner=users.listing_owner(query.user, query.user_id),
                                present=service.admin_body)
    return {"tasks": page, "next_cursor": cursor}


@app.route("/api/tasks/{task_id}/cancel", methods=["POST"])
@http.endpoint()
def cancel_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    service = task_service()
    return service.body(cancel.cancel(service.get_own(context.user, task_id), video.default_service()))


# --- queue lanes, Ark callbacks and schedules --------------------------------------------------------------


@app.route("/api/queue/callback", methods=["POST"])
@http.endpoint("public")
def ark_callback(context: RequestContext) -> dict[str, Any]:
    # Authenticated by the per-task secret in the callback URL (only its hash is stored); the body is checked
    # first, before any read.
    callback = parse(ArkCallback, context.json())
    query = context.query()
    video.default_service().on_callback(query.get("task_id", ""), query.get("token", ""), callback.model_dump())
    return {"received": True}


def _lane_queue_arn(lane: Lane) -> str:
    settings = get_settings()
    name = lane.queue_name(settings.resource_prefix)
    return f"arn:aws:sqs:{settings.region}:{settings.aws_account_id}:{name}"


def _lane_handler(lane: Lane) -> Callable[[SQSEvent], dict[str, Any]]:
    def handle(event: SQSEvent) -> dict[str, Any]:
        return lanes.handle_batch(lane.name, [record.to_dict() for record in event])

    # Chalice names the Lambda function after the handler: each lane needs its own module-level name.
    handle.__name__ = handle.__qualname__ = lane.handler_name
    return handle


for _lane in LANES:
    globals()[_lane.handler_name] = app.on_sqs_message(
        queue_arn=_lane_queue_arn(_lane),
        batch_size=_lane.batch_size,
        maximum_concurrency=_lane.maximum_concurrency,
        name=_lane.handler_name,
    )(_lane_handler(_lane))


# The poller starts no status read after this many seconds, so its last one (one Ark call within
# `VIDEO_TIMEOUT`) still ends well before the schedule's 60 s Lambda timeout.
POLL_BUDGET_S = 30.0


@app.schedule(Rate(1, unit=Rate.MINUTES), name="video_poller")
def video_poller(_: Any) -> dict[str, int]:
    return {"polled": video.default_service().poll_due(budget_s=POLL_BUDGET_S)}


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweeper")
def sweeper(_: Any) -> dict[str, int]:
    report = vars(Sweeper(sqs=aws.sqs(), video=video.default_service()).sweep())
    seed.ensure_default_models()  # after the sweep, which a failure here must not hold up
    return report


# --- live updates over WebSockets ------------------------------------------------------------------------

# Chalice 1.34 still counts WebSockets as experimental: loading or packaging the app fails without the opt-in.
app.experimental_feature_flags.update(["WEBSOCKETS"])


def live_updates() -> LiveUpdates:
    return LiveUpdates(task_service())


def publish_task_update(task: TaskRecord) -> None:
    live_updates().publish(task)


# Every status change, wherever it is written (worker, poller, callback, cancel, admin, sweeper), reaches the
# task's owner: all of them run in this app's functions, through the state machine.
statemachine.listeners.append(publish_task_update)


@app.route("/api/ws/ticket", methods=["POST"])
@http.endpoint()
def ws_ticket(context: RequestContext) -> dict[str, Any]:
    return asdict(live_updates().tickets.issue(context.user))


@app.on_ws_connect()
def ws_connect(event: WebsocketEvent) -> dict[str, Any]:
    return live_updates().connect(event.to_dict())


@app.on_ws_message()
def ws_message(event: WebsocketEvent) -> dict[str, Any]:
    return live_updates().message(event.to_dict())


@app.on_ws_disconnect()
def ws_disconnect(event: WebsocketEvent) -> dict[str, Any]:
    return live_updates().disconnect(event.to_dict())


# --- uploads and stored objects ----------------------------------------------------------------------------


@app.route("/api/uploads", methods=["POST"])
@http.endpoint()
def create_upload(context: RequestContext) -> Any:
    form = UploadService(s3=aws.s3()).create(context.user, parse(UploadRequest, context.json()))
    return json_response(201, form.body())


@app.route("/api/tasks/{task_id}", methods=["DELETE"])
@http.endpoint()
def remove_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    service = task_service()
    task = service.get(task_id) if context.user.is_admin else service.get_own(context.user, task_id)
    objects = delete_task(task, s3=service.s3, bucket=service.settings.media_bucket)
    return {"deleted": task_id, "objects_deleted": objects}


http.register_preflight()
