"""arkflow's Chalice app: routes and event handlers only. Its sections follow `chalicelib/`'s packages; every
handler takes its services from the container's wiring (`chalicelib.wiring`). The design: docs/design.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from chalice import Chalice, Rate
from chalice.app import SQSEvent, WebsocketEvent

from chalicelib import catalog, wiring
from chalicelib.accounts import users
from chalicelib.accounts.first_admin import ensure_first_admin
from chalicelib.api import bodies
from chalicelib.api.http import Http, RequestContext, json_response
from chalicelib.resources import LANES, WEBHOOK_DELIVERY, Lane, Queue
from chalicelib.schemas import (
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
    WebhookDeliveriesQuery,
    parse,
)
from chalicelib.settings import get_settings
from chalicelib.tasks import cancel, operator
from chalicelib.tasks.delete import delete_task
from chalicelib.webhooks.bodies import WebhookDeliveriesBody, WebhookSecretBody
from chalicelib.webhooks.delivery import attempts_of

# Chalice would give the app's logger (named after the app) its own stdout handler at ERROR and stop it
# propagating. Unconfigured, every logger (each module logs under its own `__name__`) propagates to the root
# logger, where Lambda's runtime installs its handler at the function's log level: WARNING and above reach it.
app = Chalice(app_name="arkflow", configure_logs=False)
# Chalice 1.34 still counts WebSockets as experimental: loading or packaging the app fails without the opt-in.
app.experimental_feature_flags.update(["WEBSOCKETS"])
# A login body is two short strings: anything larger is refused before it is decoded.
LOGIN_MAX_BODY_BYTES = 4096
http = Http(app, lambda: wiring.current().authenticator)


# --- accounts: health, sessions and users -------------------------------------------------------------------


@http.route("/api/health", "GET", access="public")
def health(_: RequestContext) -> dict[str, Any]:
    return {"status": "ok"}


@http.route("/api/users/login", "POST", access="public")
def login(context: RequestContext) -> dict[str, Any]:
    ensure_first_admin()
    request = parse(LoginRequest, context.json(max_bytes=LOGIN_MAX_BODY_BYTES))
    result = wiring.current().authenticator.login(request.username, request.password, context.source_address())
    return {"token": result.token, "role": result.role, "expires_at": result.expires_at}


@http.route("/api/users/logout", "POST")
def logout(context: RequestContext) -> dict[str, Any]:
    services = wiring.current()
    services.authenticator.logout(context.user, sockets=services.live)
    return {"status": "logged_out"}


@http.route("/api/users/me", "GET")
def me(context: RequestContext) -> dict[str, Any]:
    user = users.get_user(context.user.username)
    return {"username": user.username, "user_id": user.user_id, "role": user.role, "created_at": user.created_at}


@http.route("/api/admin/users", "GET", access="admin")
def admin_list_users(_: RequestContext) -> dict[str, Any]:
    return {"users": [bodies.user_body(user) for user in users.list_users()]}


@http.route("/api/admin/users", "POST", access="admin")
def admin_create_user(context: RequestContext) -> Any:
    return json_response(201, bodies.user_body(users.create_user(parse(UserCreate, context.json()))))


@http.route("/api/admin/users/{username}", "PUT", access="admin")
def admin_update_user(context: RequestContext, username: str) -> dict[str, Any]:
    request = parse(UserUpdate, context.json())
    user = users.update_user(context.user, username, request, sockets=wiring.current().live)
    return bodies.user_body(user)


@http.route("/api/admin/users/{username}", "DELETE", access="admin")
def admin_delete_user(context: RequestContext, username: str) -> dict[str, Any]:
    users.delete_user(context.user, username, sockets=wiring.current().live)
    return {"deleted": username}


# --- catalog: models ------------------------------------------------------------------------------------------


def _admin_model_body(model: Any) -> dict[str, Any]:
    services = wiring.current()
    return bodies.admin_model_body(model, services.clock.now(), services.settings.quota_timezone)


@http.route("/api/models", "GET")
def list_enabled_models(_: RequestContext) -> dict[str, Any]:
    return {"models": [bodies.public_model_body(model) for model in catalog.list_models(enabled_only=True)]}


@http.route("/api/admin/models", "GET", access="admin")
def admin_list_models(_: RequestContext) -> dict[str, Any]:
    return {"models": [_admin_model_body(model) for model in catalog.list_models()]}


@http.route("/api/admin/ark-models", "GET", access="admin")
def admin_list_ark_models(_: RequestContext) -> dict[str, Any]:
    return {"provider": catalog.provider(), "ark_models": bodies.ark_model_bodies(catalog.provider())}


@http.route("/api/admin/models", "POST", access="admin")
def admin_create_model(context: RequestContext) -> Any:
    return json_response(201, _admin_model_body(catalog.create_model(parse(ModelCreate, context.json()))))


@http.route("/api/admin/models/{model_id}", "GET", access="admin")
def admin_get_model(_: RequestContext, model_id: str) -> dict[str, Any]:
    return _admin_model_body(catalog.get_model(model_id))


@http.route("/api/admin/models/{model_id}", "PUT", access="admin")
def admin_update_model(context: RequestContext, model_id: str) -> dict[str, Any]:
    model = catalog.update_model(model_id, parse(ModelUpdate, context.json()))
    wiring.current().waker.after_limits_changed(model_id)  # raised limits: parked tasks start now, not at a sweep
    return _admin_model_body(model)


@http.route("/api/admin/models/{model_id}", "DELETE", access="admin")
def admin_delete_model(_: RequestContext, model_id: str) -> Any:
    catalog.delete_model(model_id)
    return json_response(200, {"deleted": model_id})


# --- tasks: intake, queries, cancel, operator changes, delete --------------------------------------------------


@http.route("/api/tasks", "POST")
def create_task(context: RequestContext) -> Any:
    created = wiring.current().intake.create(context.user, context.json(), context.header("idempotency-key"))
    return json_response(created.status_code, created.body)


@http.route("/api/tasks/{task_id}/render", "POST")
def render_task(context: RequestContext, task_id: str) -> Any:
    services = wiring.current()
    draft = services.queries.get_own(context.user, task_id)
    body = context.json() if context.has_body() else None
    created = services.intake.render(context.user, draft, body, context.header("idempotency-key"))
    return json_response(created.status_code, created.body)


@http.route("/api/tasks", "GET")
def list_tasks(context: RequestContext) -> dict[str, Any]:
    services = wiring.current()
    page, cursor = services.queries.list(parse(TaskListQuery, context.query()), owner=context.user.user_id,
                                         present=services.bodies.body)
    return {"tasks": page, "next_cursor": cursor}


@http.route("/api/tasks/{task_id}", "GET")
def get_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    services = wiring.current()
    return services.bodies.body(services.queries.get_own(context.user, task_id), with_queue_position=True)


@http.route("/api/admin/tasks", "GET", access="admin")
def admin_list_tasks(context: RequestContext) -> dict[str, Any]:
    services = wiring.current()
    query = parse(AdminTaskListQuery, context.query())
    page, cursor = services.queries.list(query, owner=users.listing_owner(query.user, query.user_id),
                                         present=services.bodies.admin_body)
    return {"tasks": page, "next_cursor": cursor}


@http.route("/api/tasks/{task_id}/cancel", "POST")
def cancel_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    services = wiring.current()
    task = cancel.cancel(services.queries.get_own(context.user, task_id), services.video_status, services.clock)
    return services.bodies.body(task)


@http.route("/api/tasks/{task_id}/status", "PUT", access="admin_or_service")
def update_task_status(context: RequestContext, task_id: str) -> dict[str, Any]:
    services = wiring.current()
    task = services.queries.get(task_id)
    request = parse(StatusUpdateRequest, context.json())
    changed = operator.apply(task, request, sqs=services.sqs, video=lambda: services.video_status,
                             clock=services.clock)
    return services.bodies.body(changed, for_admin=True)


@http.route("/api/tasks/{task_id}", "DELETE")
def remove_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    services = wiring.current()
    task = services.queries.get(task_id) if context.user.is_admin else services.queries.get_own(context.user, task_id)
    objects = delete_task(task, s3=services.s3, bucket=services.settings.media_bucket)
    return {"deleted": task_id, "objects_deleted": objects}


# --- media: uploads -------------------------------------------------------------------------------------------


@http.route("/api/uploads", "POST")
def create_upload(context: RequestContext) -> Any:
    request = parse(UploadRequest, context.json())
    form = wiring.current().uploads.create(context.user.user_id, request.content_type, request.size)
    return json_response(201, form.body())


# --- lanes: one worker per lane queue ---------------------------------------------------------------------------


def _queue_arn(queue: Queue) -> str:
    settings = get_settings()
    name = queue.queue_name(settings.resource_prefix)
    return f"arn:aws:sqs:{settings.region}:{settings.aws_account_id}:{name}"


def _lane_handler(lane: Lane) -> Callable[[SQSEvent], dict[str, Any]]:
    def handle(event: SQSEvent) -> dict[str, Any]:
        return wiring.current().lane_worker(lane.name).handle([record.to_dict() for record in event])

    # Chalice names the Lambda function after the handler: each lane needs its own module-level name.
    handle.__name__ = handle.__qualname__ = lane.handler_name
    return handle


for _lane in LANES:
    globals()[_lane.handler_name] = app.on_sqs_message(
        queue_arn=_queue_arn(_lane),
        batch_size=_lane.batch_size,
        maximum_concurrency=_lane.maximum_concurrency,
        name=_lane.handler_name,
    )(_lane_handler(_lane))


# --- video: Ark's callback and the poller -----------------------------------------------------------------------

# The poller starts no status read after this many seconds, so its last one (one Ark call within
# `VIDEO_TIMEOUT`) still ends well before the schedule's 60 s Lambda timeout.
POLL_BUDGET_S = 30.0


@http.route("/api/queue/callback", "POST", access="public")
def ark_callback(context: RequestContext) -> dict[str, Any]:
    # Authenticated by the per-task secret in the callback URL (only its hash is stored); the body is checked
    # first, before any read.
    callback = parse(ArkCallback, context.json())
    query = context.query()
    wiring.current().video_status.on_callback(query.get("task_id", ""), query.get("token", ""),
                                               callback.model_dump())
    return {"received": True}


@app.schedule(Rate(1, unit=Rate.MINUTES), name="video_poller")
def video_poller(_: Any) -> dict[str, int]:
    return {"polled": wiring.current().video_status.poll_due(budget_s=POLL_BUDGET_S)}


# --- sweeper ----------------------------------------------------------------------------------------------------


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweeper")
def sweeper(_: Any) -> dict[str, int]:
    report = vars(wiring.current().sweeper.sweep())
    catalog.ensure_default_models_once()  # after the sweep, which a failure here must not hold up
    return report


# --- webhooks: the signing secret, the attempts of a task's webhooks, and their delivery -------------------------


@http.route("/api/webhooks/secret", "GET")
def webhook_secret(context: RequestContext) -> dict[str, Any]:
    secret = wiring.current().webhook_secrets.current(context.user.user_id)
    return WebhookSecretBody(secret=secret).model_dump()


@http.route("/api/webhooks/secret/rotate", "POST")
def rotate_webhook_secret(context: RequestContext) -> dict[str, Any]:
    secret = wiring.current().webhook_secrets.rotate(context.user.user_id)
    return WebhookSecretBody(secret=secret).model_dump()


# Scope for API keys: tasks:read.
@http.route("/api/webhooks/deliveries", "GET")
def webhook_deliveries(context: RequestContext) -> dict[str, Any]:
    query = parse(WebhookDeliveriesQuery, context.query())
    task = wiring.current().queries.get_own(context.user, query.task_id)
    return WebhookDeliveriesBody(task_id=task.task_id, deliveries=attempts_of(task.task_id)).model_dump()


@app.on_sqs_message(queue_arn=_queue_arn(WEBHOOK_DELIVERY), batch_size=WEBHOOK_DELIVERY.batch_size,
                    maximum_concurrency=WEBHOOK_DELIVERY.maximum_concurrency, name=WEBHOOK_DELIVERY.handler_name)
def webhook_delivery(event: SQSEvent) -> dict[str, Any]:
    return wiring.current().webhook_delivery.handle([record.to_dict() for record in event])


# --- live: WebSocket tickets and connections --------------------------------------------------------------------


@http.route("/api/ws/ticket", "POST")
def ws_ticket(context: RequestContext) -> dict[str, Any]:
    return asdict(wiring.current().live.tickets.issue(context.user))


@app.on_ws_connect()
def ws_connect(event: WebsocketEvent) -> dict[str, Any]:
    return wiring.current().live.connect(event.to_dict())


@app.on_ws_message()
def ws_message(event: WebsocketEvent) -> dict[str, Any]:
    return wiring.current().live.message(event.to_dict())


@app.on_ws_disconnect()
def ws_disconnect(event: WebsocketEvent) -> dict[str, Any]:
    return wiring.current().live.disconnect(event.to_dict())


http.register_preflight()
