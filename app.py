"""arkflow's Chalice app: routes and event handlers only. Its sections follow `chalicelib/`'s packages; every
handler takes its services from the container's wiring (`chalicelib.wiring`). The design: docs/design.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from chalice import Chalice, Rate
from chalice.app import SQSEvent, WebsocketEvent

from chalicelib import catalog, observability, wiring
from chalicelib.accounts import users
from chalicelib.accounts.first_admin import ensure_first_admin
from chalicelib.api import bodies, openapi
from chalicelib.api import responses as answers
from chalicelib.api.http import Http, RequestContext, json_response
from chalicelib.audit.trail import record_state
from chalicelib.metrics import figures
from chalicelib.resources import LANES, WEBHOOK_DELIVERY, Lane, Queue
from chalicelib.schemas import (
    AdminTaskListQuery,
    ArkCallback,
    AuditQuery,
    CallbackQuery,
    DeadLetterReplay,
    IdempotencyKeyHeader,
    KeyCreate,
    KeyCreated,
    KeyDeleted,
    KeyList,
    LoginRequest,
    MetricsQuery,
    ModelCreate,
    ModelUpdate,
    RenderRequest,
    StatusUpdateRequest,
    TaskListQuery,
    TaskRequest,
    UploadRequest,
    UsageQuery,
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
# JSON log lines with each request's and task's ids, and per-model metrics flushed after every invocation.
observability.instrument(app)
# A login body is two short strings: anything larger is refused before it is decoded.
LOGIN_MAX_BODY_BYTES = 4096
http = Http(app, lambda: wiring.current().authenticator)
# Every route declares what it takes and answers on `http.route` (chalicelib/api/http.py, `Operation`): the API's
# OpenAPI document (`GET /api/openapi.json`) is built from those declarations.
IDEMPOTENT = {"Idempotency-Key": IdempotencyKeyHeader}


def _audit(context: RequestContext, action: str, target: str, before: dict[str, Any] | None,
           after: dict[str, Any] | None) -> None:
    """An admin's action on the audit trail, once it is done (docs/design.md, "Audit trail")."""
    wiring.current().audit.record(actor=context.user.username, action=action, target=target, before=before,
                                  after=after)


TASK_LINKS = {"get_task": {"task_id": "$response.body#/id"}, "cancel_task": {"task_id": "$response.body#/id"},
              "remove_task": {"task_id": "$response.body#/id"}}


# --- accounts: health, sessions and users -------------------------------------------------------------------


@http.route("/api/health", "GET", access="public", responses={200: answers.Health})
def health(_: RequestContext) -> dict[str, Any]:
    """Whether the API answers."""
    return {"status": "ok"}


@http.route("/api/users/login", "POST", access="public", body=LoginRequest, responses={200: answers.LoginAnswer},
            errors={401: "`invalid_credentials`: the same for a wrong password and an unknown user",
                    429: "`too_many_attempts`: wait `Retry-After` seconds"})
def login(context: RequestContext) -> dict[str, Any]:
    """Log in: a session token for 12 hours."""
    ensure_first_admin()
    request = parse(LoginRequest, context.json(max_bytes=LOGIN_MAX_BODY_BYTES))
    result = wiring.current().authenticator.login(request.username, request.password, context.source_address())
    return {"token": result.token, "role": result.role, "expires_at": result.expires_at}


@http.route("/api/users/logout", "POST", responses={200: answers.LoggedOut})
def logout(context: RequestContext) -> dict[str, Any]:
    """End the token's session and close the WebSocket connections it opened."""
    services = wiring.current()
    services.authenticator.logout(context.user, sockets=services.live)
    return {"status": "logged_out"}


@http.route("/api/users/me", "GET", responses={200: answers.Me}, scope="tasks:read")
def me(context: RequestContext) -> dict[str, Any]:
    """The caller's account."""
    user = users.get_user(context.user.username)
    return {"username": user.username, "user_id": user.user_id, "role": user.role, "created_at": user.created_at}


@http.route("/api/admin/users", "GET", access="admin", responses={200: answers.UserList})
def admin_list_users(_: RequestContext) -> dict[str, Any]:
    """Every account."""
    return {"users": [bodies.user_body(user) for user in users.list_users()]}


@http.route("/api/admin/users", "POST", access="admin", body=UserCreate, responses={201: answers.User},
            errors={409: "`user_exists`"},
            links={201: {"admin_update_user": {"username": "$response.body#/username"},
                         "admin_delete_user": {"username": "$response.body#/username"}}})
def admin_create_user(context: RequestContext) -> Any:
    """Create an account."""
    user = bodies.user_body(users.create_user(parse(UserCreate, context.json())))
    _audit(context, "user.create", f"user:{user['username']}", None, user)
    return json_response(201, user)


@http.route("/api/admin/users/{username}", "PUT", access="admin", body=UserUpdate, responses={200: answers.User},
            errors={409: "`self_lockout`: administrators cannot disable or demote themselves"})
def admin_update_user(context: RequestContext, username: str) -> dict[str, Any]:
    """Change an account's role, password or disabled flag; a disabled account's sessions end at once."""
    request = parse(UserUpdate, context.json())
    before = bodies.user_body(users.get_user(username))
    user = bodies.user_body(users.update_user(context.user, username, request, sockets=wiring.current().live))
    _audit(context, "user.update", f"user:{username}", before,
           {**user, "password_changed": request.password is not None})
    return user


@http.route("/api/admin/users/{username}", "DELETE", access="admin", responses={200: answers.Deleted},
            errors={409: "`self_lockout`: administrators cannot delete themselves"})
def admin_delete_user(context: RequestContext, username: str) -> dict[str, Any]:
    """Delete an account; its sessions end at once and its name may be given to a new, empty account."""
    before = bodies.user_body(users.get_user(username))
    users.delete_user(context.user, username, sockets=wiring.current().live)
    _audit(context, "user.delete", f"user:{username}", before, None)
    return {"deleted": username}


# --- accounts: API keys (a login session's: no key reaches these routes) ---------------------------------------


@http.route("/api/keys", "POST", body=KeyCreate, responses={201: KeyCreated},
            errors={409: "`key_limit_reached`: the account holds as many keys as it may"},
            links={201: {"revoke_key": {"key_id": "$response.body#/id"}}})
def create_key(context: RequestContext) -> Any:
    """Create an API key for the caller's backend: the key is in this answer only (stored as a hash)."""
    created = wiring.current().api_keys.create(context.user, parse(KeyCreate, context.json()))
    return json_response(201, created.model_dump())


@http.route("/api/keys", "GET", responses={200: KeyList})
def list_keys(context: RequestContext) -> dict[str, Any]:
    """The caller's keys (never the keys themselves)."""
    return wiring.current().api_keys.list(context.user).model_dump()


@http.route("/api/keys/{key_id}", "DELETE", responses={200: KeyDeleted})
def revoke_key(context: RequestContext, key_id: str) -> dict[str, Any]:
    """Revoke one of the caller's keys: refused from the next request on."""
    wiring.current().api_keys.revoke(context.user, key_id)
    return KeyDeleted(deleted=key_id).model_dump()


# --- catalog: models ------------------------------------------------------------------------------------------


def _admin_model_body(model: Any) -> dict[str, Any]:
    services = wiring.current()
    return bodies.admin_model_body(model, services.clock.now(), services.settings.quota_timezone)


@http.route("/api/models", "GET", responses={200: answers.ModelList}, scope="tasks:read")
def list_enabled_models(_: RequestContext) -> dict[str, Any]:
    """The enabled models, with what each takes (`capabilities`) and where it is in its lifecycle."""
    return {"models": [bodies.public_model_body(model) for model in catalog.list_models(enabled_only=True)]}


@http.route("/api/admin/models", "GET", access="admin", responses={200: answers.AdminModelList})
def admin_list_models(_: RequestContext) -> dict[str, Any]:
    """Every model, with its limits, today's usage and slots in use."""
    return {"models": [_admin_model_body(model) for model in catalog.list_models()]}


@http.route("/api/admin/ark-models", "GET", access="admin", responses={200: answers.ArkModelList})
def admin_list_ark_models(_: RequestContext) -> dict[str, Any]:
    """The capability table: what each upstream model may be named and takes."""
    return {"provider": catalog.provider(), "ark_models": bodies.ark_model_bodies(catalog.provider())}


@http.route("/api/admin/models", "POST", access="admin", body=ModelCreate, responses={201: answers.AdminModel},
            errors={409: "`model_exists`"},
            links={201: {name: {"model_id": "$response.body#/model_id"}
                         for name in ("admin_get_model", "admin_update_model", "admin_delete_model")}})
def admin_create_model(context: RequestContext) -> Any:
    """Add a model: the Ark model or endpoint it calls, its limits and defaults."""
    model = catalog.create_model(parse(ModelCreate, context.json()))
    _audit(context, "model.create", f"model:{model.model_id}", None, record_state(model))
    return json_response(201, _admin_model_body(model))


@http.route("/api/admin/models/{model_id}", "GET", access="admin", responses={200: answers.AdminModel})
def admin_get_model(_: RequestContext, model_id: str) -> dict[str, Any]:
    """One model, with today's usage and slots in use."""
    return _admin_model_body(catalog.get_model(model_id))


@http.route("/api/admin/models/{model_id}", "PUT", access="admin", body=ModelUpdate,
            responses={200: answers.AdminModel},
            errors={409: "`incompatible_queued_tasks` (send `force: true`), `model_changed` (read it and send the "
                         "change again)"})
def admin_update_model(context: RequestContext, model_id: str) -> dict[str, Any]:
    """Change the given fields of a model; a new upstream moves its queued tasks (docs/api.md, "Models")."""
    request = parse(ModelUpdate, context.json())
    before = record_state(catalog.get_model(model_id))
    model = catalog.update_model(model_id, request)
    wiring.current().waker.after_limits_changed(model_id)  # raised limits: parked tasks start now, not at a sweep
    _audit(context, "model.update", f"model:{model_id}", before, record_state(model))
    return _admin_model_body(model)


@http.route("/api/admin/metrics", "GET", access="admin", query=MetricsQuery, responses={200: answers.Metrics})
def admin_metrics(context: RequestContext) -> dict[str, Any]:
    """Per model over the last hour or day: queue, slots, wait and run times, outcomes, Ark's errors, cost."""
    query = parse(MetricsQuery, context.query())
    return figures.metrics(query.window, wiring.current().clock.now())


@http.route("/api/admin/usage", "GET", access="admin", query=UsageQuery, responses={200: answers.Usage})
def admin_usage(context: RequestContext) -> dict[str, Any]:
    """Per day, model and user: what finished, and what it cost; a page of rows at a time (`next_cursor`)."""
    services = wiring.current()
    query = parse(UsageQuery, context.query())
    return figures.usage(query.days, services.clock.now(), services.settings.quota_timezone, query.cursor,
                         query.limit)


@http.route("/api/admin/models/{model_id}/circuit/close", "POST", access="admin",
            responses={200: answers.AdminModel})
def admin_close_circuit(context: RequestContext, model_id: str) -> dict[str, Any]:
    """Close the model's circuit breaker by hand: its waiting tasks go to Ark again (docs/design.md, "Circuit
    breaker")."""
    model = catalog.get_model(model_id)
    before, after = wiring.current().breaker.close(model_id)
    _audit(context, "circuit.close", f"model:{model_id}", before, after)
    return _admin_model_body(model)


@http.route("/api/admin/models/{model_id}", "DELETE", access="admin", responses={200: answers.Deleted},
            errors={409: "`model_in_use`: it has unfinished tasks"})
def admin_delete_model(context: RequestContext, model_id: str) -> Any:
    """Delete a model that has no unfinished task."""
    before = record_state(catalog.get_model(model_id))
    catalog.delete_model(model_id)
    _audit(context, "model.delete", f"model:{model_id}", before, None)
    return json_response(200, {"deleted": model_id})


# --- tasks: intake, queries, cancel, operator changes, delete --------------------------------------------------


@http.route("/api/tasks", "POST", body=TaskRequest, headers=IDEMPOTENT, responses={201: answers.TaskCreated},
            errors={404: "`model_not_found`",
                    409: "`model_disabled`, `model_retired`, `model_changed`, `model_unconfigured`, "
                         "`idempotency_conflict` (the key was used with another body)",
                    413: "`payload_too_large`: inline images too large for a deployment without a bucket",
                    429: "`quota_exceeded`: the model's or the user's daily quota is used up; `rate_limited`: more "
                         "creations this minute than the user's `requests_per_minute`"},
            links={201: TASK_LINKS}, scope="tasks:write")
def create_task(context: RequestContext) -> Any:
    """Submit an image or video task, judged against its model's capabilities (docs/api.md, "Tasks")."""
    created = wiring.current().intake.create(context.user, context.json(), context.header("idempotency-key"))
    return json_response(created.status_code, created.body)


@http.route("/api/tasks/{task_id}/render", "POST", body=RenderRequest, body_required=False, headers=IDEMPOTENT,
            responses={201: answers.TaskCreated},
            errors={409: "`not_a_draft`, `draft_not_succeeded`, `draft_expired`, `draft_model_changed`, "
                         "`model_disabled`, `model_retired`, `idempotency_conflict`",
                    429: "`quota_exceeded`, `rate_limited`"},
            links={201: TASK_LINKS}, scope="tasks:write")
def render_task(context: RequestContext, task_id: str) -> Any:
    """Render a succeeded draft video in full, as a new task."""
    services = wiring.current()
    draft = services.queries.get_own(context.user, task_id)
    body = context.json() if context.has_body() else None
    created = services.intake.render(context.user, draft, body, context.header("idempotency-key"))
    return json_response(created.status_code, created.body)


@http.route("/api/tasks", "GET", query=TaskListQuery, responses={200: answers.TaskPage}, scope="tasks:read")
def list_tasks(context: RequestContext) -> dict[str, Any]:
    """The caller's tasks, newest first, a page at a time (follow `next_cursor` until it is null)."""
    services = wiring.current()
    page, cursor = services.queries.list(parse(TaskListQuery, context.query()), owner=context.user.user_id,
                                         present=services.bodies.body)
    return {"tasks": page, "next_cursor": cursor}


@http.route("/api/tasks/{task_id}", "GET", responses={200: answers.Task}, scope="tasks:read")
def get_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    """One of the caller's tasks, with fresh result links and its place in the queue."""
    services = wiring.current()
    return services.bodies.body(services.queries.get_own(context.user, task_id), with_queue_position=True)


@http.route("/api/admin/tasks", "GET", access="admin", query=AdminTaskListQuery,
            responses={200: answers.AdminTaskPage}, errors={404: "`user_not_found`: no account holds `user`"})
def admin_list_tasks(context: RequestContext) -> dict[str, Any]:
    """Everyone's tasks, newest first, by user name or id as well."""
    services = wiring.current()
    query = parse(AdminTaskListQuery, context.query())
    page, cursor = services.queries.list(query, owner=users.listing_owner(query.user, query.user_id),
                                         present=services.bodies.admin_body)
    return {"tasks": page, "next_cursor": cursor}


@http.route("/api/tasks/{task_id}/cancel", "POST", responses={200: answers.Task},
            errors={409: "`not_cancellable` (`details.status`: the status it has)"}, scope="tasks:write")
def cancel_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    """Cancel a queued task, or a video Ark still queues."""
    services = wiring.current()
    task = cancel.cancel(services.queries.get_own(context.user, task_id), services.video_status, services.clock)
    return services.bodies.body(task)


@http.route("/api/tasks/{task_id}/status", "PUT", access="admin_or_service", body=StatusUpdateRequest,
            responses={200: answers.Task},
            errors={409: "`illegal_transition`, `task_changed`, `worker_busy`, `worker_only`, `video_at_ark`, "
                         "`generating_at_ark`, `ended_at_ark`"})
def update_task_status(context: RequestContext, task_id: str) -> dict[str, Any]:
    """An operator's change of a task's status (docs/api.md, "Tasks": the transitions it may make)."""
    services = wiring.current()
    task = services.queries.get(task_id)
    request = parse(StatusUpdateRequest, context.json())
    before = {"status": task.status, "stage": task.stage, "error": task.error.as_dict() if task.error else None}
    changed = operator.apply(task, request, sqs=services.sqs, video=lambda: services.video_status,
                             clock=services.clock)
    _audit(context, "task.status", f"task:{task_id}", before,
           {**request.model_dump(mode="json", exclude_none=True), "status": changed.status, "stage": changed.stage})
    return services.bodies.body(changed, for_admin=True)


@http.route("/api/tasks/{task_id}", "DELETE", responses={200: answers.TaskDeleted},
            errors={409: "`task_not_finished`, `task_changed`"}, scope="tasks:write")
def remove_task(context: RequestContext, task_id: str) -> dict[str, Any]:
    """Delete a finished task and everything stored for it (admins: anyone's)."""
    services = wiring.current()
    task = services.queries.get(task_id) if context.user.is_admin else services.queries.get_own(context.user, task_id)
    objects = delete_task(task, s3=services.s3, bucket=services.settings.media_bucket)
    return {"deleted": task_id, "objects_deleted": objects}


# --- steering: dead letters and the audit trail -------------------------------------------------------------


@http.route("/api/admin/dlq", "GET", access="admin", responses={200: answers.DeadLetterList})
def admin_list_dead_letters(_: RequestContext) -> dict[str, Any]:
    """What sits in each lane's dead-letter queue and the webhook delivery's (50 messages each at most), with the
    task each names and why it died; listing hides none of them from a replay."""
    return wiring.current().dead_letters.listing()


@http.route("/api/admin/dlq/{lane}/replay", "POST", access="admin", body=DeadLetterReplay, body_required=False,
            responses={200: answers.DeadLettersReplayed})
def admin_replay_dead_letters(context: RequestContext, lane: str) -> dict[str, Any]:
    """Re-drive a queue's dead letters (100 a call at most): finished and missing tasks are dropped, a video Ark
    accepted goes to the poller, never to a create (docs/api.md, "Dead letters")."""
    request = parse(DeadLetterReplay, context.json()) if context.has_body() else DeadLetterReplay()
    return wiring.current().dead_letters.replay(lane, request.message_ids, actor=context.user.username)


@http.route("/api/admin/audit", "GET", access="admin", query=AuditQuery, responses={200: answers.AuditPage})
def admin_audit(context: RequestContext) -> dict[str, Any]:
    """The audit trail, newest first, by actor and target (follow `next_cursor` until it is null)."""
    query = parse(AuditQuery, context.query())
    entries, cursor = wiring.current().audit.page(actor=query.actor, target=query.target, cursor=query.cursor,
                                                   limit=query.limit)
    return {"entries": entries, "next_cursor": cursor}


# --- media: uploads -------------------------------------------------------------------------------------------


@http.route("/api/uploads", "POST", body=UploadRequest, responses={201: answers.UploadForm},
            errors={503: "`uploads_unavailable`: this deployment has no bucket (send images inline)"},
            scope="tasks:write")
def create_upload(context: RequestContext) -> Any:
    """A presigned form to upload one reference image straight to the bucket."""
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
        # The context's remaining time bounds the tasks a worker runs for the slots it hands on (the baton pass);
        # without one (a handler called by hand) it hands them on by message.
        context = event.context
        time_left = (lambda: context.get_remaining_time_in_millis() / 1000) if context is not None else None
        return wiring.current().lane_worker(lane.name).handle([record.to_dict() for record in event],
                                                              time_left=time_left)

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


@http.route("/api/queue/callback", "POST", access="public", body=ArkCallback, query=CallbackQuery,
            responses={200: answers.CallbackReceived},
            errors={401: "`invalid_callback_token`: no such task, or not its secret"})
def ark_callback(context: RequestContext) -> dict[str, Any]:
    """Ark's status push for a video (the URL arkflow gives Ark): a hint, which a status read at Ark confirms."""
    # Authenticated by the task's signed token in the callback URL (checked with no read); the body is checked
    # first.
    callback = parse(ArkCallback, context.json())
    query = parse(CallbackQuery, context.query())
    wiring.current().video_status.on_callback(query.task_id, query.token, callback.model_dump())
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


@http.route("/api/webhooks/secret", "GET", responses={200: WebhookSecretBody})
def webhook_secret(context: RequestContext) -> dict[str, Any]:
    """The caller's webhook signing secret (made on the first read): verify deliveries with it."""
    secret = wiring.current().webhook_secrets.current(context.user.user_id)
    return WebhookSecretBody(secret=secret).model_dump()


@http.route("/api/webhooks/secret/rotate", "POST", body=None, responses={200: WebhookSecretBody})
def rotate_webhook_secret(context: RequestContext) -> dict[str, Any]:
    """A new signing secret; the one it replaces keeps signing beside it for 24 hours."""
    secret = wiring.current().webhook_secrets.rotate(context.user.user_id)
    return WebhookSecretBody(secret=secret).model_dump()


@http.route("/api/webhooks/deliveries", "GET", query=WebhookDeliveriesQuery, responses={200: WebhookDeliveriesBody},
            errors={404: "`task_not_found`: no task of the caller's has this id"}, scope="tasks:read")
def webhook_deliveries(context: RequestContext) -> dict[str, Any]:
    """Every delivery attempt of one of the caller's tasks' webhooks, oldest first."""
    query = parse(WebhookDeliveriesQuery, context.query())
    task = wiring.current().queries.get_own(context.user, query.task_id)
    return WebhookDeliveriesBody(task_id=task.task_id, deliveries=attempts_of(task.task_id)).model_dump()


@app.on_sqs_message(queue_arn=_queue_arn(WEBHOOK_DELIVERY), batch_size=WEBHOOK_DELIVERY.batch_size,
                    maximum_concurrency=WEBHOOK_DELIVERY.maximum_concurrency, name=WEBHOOK_DELIVERY.handler_name)
def webhook_delivery(event: SQSEvent) -> dict[str, Any]:
    return wiring.current().webhook_delivery.handle([record.to_dict() for record in event])


# --- live: WebSocket tickets and connections --------------------------------------------------------------------


@http.route("/api/ws/ticket", "POST", responses={200: answers.WebSocketTicket})
def ws_ticket(context: RequestContext) -> dict[str, Any]:
    """A single-use ticket, valid for a minute, to open a WebSocket of live task updates."""
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


@http.route("/api/openapi.json", "GET", access="public", responses={200: dict[str, Any]})
def openapi_document(context: RequestContext) -> Any:
    """This document: every route, what it takes and answers."""
    return json_response(200, openapi.document_json(http, context.base_path()))


http.register_preflight()
