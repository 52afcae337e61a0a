"""The API's answers as schemas: what `chalicelib.api.bodies` and the routes return, for the OpenAPI document
(`chalicelib.api.openapi`). Nothing validates answers with them at run time; the API's fuzz test
(tests/devstack/test_api_fuzz.py) checks every answer of the local stack against them, and they forbid fields
they do not name, so a field added to a body without its schema fails that test.

Fields without a default are in every answer (null where the type allows it); those with one may be left out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.ids import TASK_ID_PATTERN, USER_ID_PATTERN
from chalicelib.resources import TaskType
from chalicelib.schemas import PRICE_UNITS, Role, TaskStatus
from chalicelib.webhooks.events import WebhookEvent

Timestamp = Annotated[str, Field(description="ISO 8601 UTC with milliseconds, e.g. 2025-01-31T12:00:00.000Z",
                                 json_schema_extra={"format": "date-time"})]
TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN)]
UserId = Annotated[str, Field(pattern=USER_ID_PATTERN)]
Lifecycle = Literal["active", "deprecated", "retired"]
Url = Annotated[str, Field(description="a result or input link: presigned (it expires), Ark's, or as given")]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ------------------------------------------------------------------------------------------------


class ErrorObject(BaseModel):
    """`chalicelib.errors.error_object`: a code to branch on, a message for people, and what else the code
    says (`details` on API errors; `upstream_message`, Ark's own words, to admins on a task's error)."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    details: Any = None


class ErrorBody(_Answer):
    error: ErrorObject


class ModelWarning(_Answer):
    """A model on its way out (`model_deprecated`, `model_retired`) and what replaces it."""

    code: str
    message: str
    replacement: str | None = None


# --- accounts ----------------------------------------------------------------------------------------------


class Health(_Answer):
    status: Literal["ok"]


class LoginAnswer(_Answer):
    token: str = Field(description="a bearer token for `Authorization: Bearer <token>`")
    role: Role
    expires_at: Timestamp


class LoggedOut(_Answer):
    status: Literal["logged_out"]


class Me(_Answer):
    username: str
    user_id: UserId
    role: Role
    created_at: Timestamp


class User(_Answer):
    username: str
    user_id: UserId | None = Field(description="null only on an account made before ids that never logged in since")
    role: Role
    disabled: bool
    requests_per_minute: int = Field(description="task creations a minute the user may make (429 `rate_limited` "
                                                 "beyond); the default unless an admin set one")
    created_at: Timestamp
    updated_at: Timestamp


class UserList(_Answer):
    users: list[User]


class Deleted(_Answer):
    deleted: str = Field(description="the id or name of what was deleted")


# --- catalog -----------------------------------------------------------------------------------------------


class Capabilities(BaseModel):
    """What a client needs to build a form for the model, and what the API checks (docs/api.md, "Capabilities")."""

    model_config = ConfigDict(extra="allow")

    api: TaskType
    family: str
    prompt: dict[str, Any]
    fields: dict[str, dict[str, Any]] = Field(description="by request path (`size`, `params.duration`, ...)")
    input_modes: list[dict[str, Any]]


class PublicModel(_Answer):
    model_id: str
    type: TaskType
    display_name: str
    enabled: bool
    defaults: dict[str, Any]
    status: Lifecycle
    replacement: str | None
    warnings: list[ModelWarning]
    capabilities: Capabilities | None = Field(description="null for a model whose upstream arkflow does not know")


class ModelList(_Answer):
    models: list[PublicModel]


class UpstreamUnavailable(_Answer):
    at: Timestamp
    code: str


class UsageToday(_Answer):
    day: str
    timezone: str
    used: int
    limit: int
    remaining: int


def _one_amount(schema: dict[str, Any]) -> None:
    for unit in PRICE_UNITS:
        schema["properties"][unit].pop("default")
    schema["oneOf"] = [{"required": ["currency", unit]} for unit in PRICE_UNITS]


class Price(_Answer):
    """`chalicelib.schemas.ModelPrice` as stored: the currency and exactly one amount."""

    model_config = ConfigDict(json_schema_extra=_one_amount)

    currency: str = Field(description="ISO 4217")
    per_image: float = Field(default=None, ge=0, description="image models: per image Ark generated")
    per_million_tokens: float = Field(default=None, ge=0, description="video models: per million tokens of usage")
    per_second: float = Field(default=None, ge=0, description="video models: per second of video")


class Circuit(_Answer):
    """The model's circuit breaker (docs/design.md, "Circuit breaker")."""

    state: Literal["closed", "open", "half_open"]
    since: Timestamp | None
    reason: str | None


class AdminModel(PublicModel):
    upstream_model: str
    family: str | None
    status_note: str
    upstream_unavailable: UpstreamUnavailable | None
    concurrency: int
    daily_quota: int
    user_daily_quota: int | None
    max_running_per_user: int | None
    lane: str
    price: Price | None = Field(description="null: no price, its tasks have no cost (docs/api.md, \"Prices and "
                                            "costs\")")
    created_at: Timestamp
    updated_at: Timestamp
    usage_today: UsageToday
    slots_in_use: int
    circuit: Circuit


class AdminModelList(_Answer):
    models: list[AdminModel]


class ArkModelId(_Answer):
    model: str
    aliases: list[str]
    status: Lifecycle
    replacement: str | None


class ArkModel(_Answer):
    family: str
    display_name: str
    type: TaskType
    ids: dict[str, ArkModelId] = Field(description="by provider (`volcengine`, `byteplus`)")
    status: Lifecycle
    replacement: str | None
    status_note: str
    limits: dict[str, int]
    capabilities: Capabilities


class ArkModelList(_Answer):
    provider: str
    ark_models: list[ArkModel]


# --- tasks -------------------------------------------------------------------------------------------------


class TaskReference(_Answer):
    type: Literal["image", "video", "audio"]
    url: Url


class Task(_Answer):
    """A task as its owner sees it (docs/api.md, "Tasks"); links are presigned afresh on every read."""

    id: TaskId
    type: TaskType
    model_id: str
    status: TaskStatus
    version: int
    prompt: str | None
    images: list[Url]
    references: list[TaskReference]
    params: dict[str, Any]
    render_of: TaskId | None
    warnings: list[ModelWarning]
    external_id: str | None = Field(description="Ark's id of the task, once it was sent there")
    error: ErrorObject | None
    result_urls: list[Url]
    image_errors: list[ErrorObject] = Field(description="per image Ark could not make: its `index` and why")
    video_url: Url | None
    last_frame_url: Url | None
    result: dict[str, Any] | None
    usage: dict[str, Any] | None = Field(description="Ark's `usage` of the finished task, as Ark answered it")
    cost: float | None = Field(ge=0, description="what the finished task cost, in `currency`, at the model's price "
                                              "when it was accepted; 0 when Ark billed nothing, null when not known")
    currency: str | None = Field(description="ISO 4217 code of `cost`; null with it")
    results_copy_error: ErrorObject | None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    cancellable: bool
    webhook_url: str | None = Field(description="where the task's webhooks are posted (docs/api.md, \"Webhooks\")")
    webhook_events: list[WebhookEvent] | None = Field(
        description="the statuses posted to `webhook_url`; null without one")
    queue_position: int | None = Field(default=None, ge=1,
                                       description="on `GET /api/tasks/{task_id}`: 1 for the next to start")
    eta_s: int | None = Field(default=None, ge=0, description="a queued task's estimated seconds until it is "
                              "finished, from its model's recent wait and run times (null: no estimate)")
    progress: float | None = Field(default=None, ge=0, lt=1, description="a running video's estimated share "
                                   "done: elapsed against its model's recent run times")


class AdminTask(Task):
    user: str = Field(description="the owner's username when the task was made")
    user_id: str


class TaskPage(_Answer):
    tasks: list[Task]
    next_cursor: str | None = Field(description="null on the last page; a page may hold fewer tasks, even none")


class AdminTaskPage(_Answer):
    tasks: list[AdminTask]
    next_cursor: str | None


class TaskCreated(_Answer):
    id: TaskId
    status: Literal["queued"]
    render_of: TaskId | None = None
    warnings: list[ModelWarning] | None = None


class TaskDeleted(_Answer):
    deleted: TaskId
    objects_deleted: int = Field(ge=0, description="stored inputs and results removed from the bucket")


# --- media, live, callbacks --------------------------------------------------------------------------------


class UploadForm(_Answer):
    upload_id: str
    ref: str = Field(description="what a task names the image by, once uploaded: `upload:<upload_id>`")
    url: str = Field(description="where to POST the file (multipart form: `fields`, then `file`)")
    fields: dict[str, str]
    expires_at: Timestamp
    max_bytes: int


class WebSocketTicket(_Answer):
    ticket: str
    url: str | None = Field(description="the WebSocket URL to open with `?ticket=`")
    expires_at: Timestamp


class CallbackReceived(_Answer):
    received: Literal[True]


# --- metrics (admin) ---------------------------------------------------------------------------------------


class Quantiles(_Answer):
    p50: float | None = Field(description="seconds; null with no task in the window")
    p95: float | None


class QueueSeries(_Answer):
    at: list[Timestamp] = Field(description="the start of each 5-minute slot of the window, oldest first")
    queued: list[int | None] = Field(description="the sweeper's sample of the slot; null where none was taken")
    running: list[int | None]


class ModelMetrics(_Answer):
    model_id: str
    queued: int = Field(ge=0, description="queued now")
    running: int = Field(ge=0, description="slots held now")
    concurrency: int
    wait_s: Quantiles = Field(description="accepted -> running of the tasks that finished in the window")
    run_s: Quantiles = Field(description="running -> terminal of the tasks that finished in the window")
    outcomes: dict[str, int] = Field(description="tasks that finished in the window, by status, and by error code")
    ark_429: int
    ark_5xx: int
    cost: float = Field(description="the sum of the cost of the tasks that finished in the window, in `currency`")
    currency: str | None = Field(description="ISO 4217 code of `cost`: the only currency of `costs`, or with several "
                                             "the model's price's")
    costs: dict[str, float] = Field(description="the sum in each currency the tasks' costs were in (never added up)")
    circuit: Circuit
    series: QueueSeries


class Metrics(_Answer):
    window: Literal["1h", "24h"]
    models: list[ModelMetrics]


class UsageRow(_Answer):
    day: str = Field(description="YYYY-MM-DD in `timezone`: the day the tasks finished")
    model_id: str
    username: str
    requests: int
    succeeded: int
    failed: int
    cost: float = Field(description="in `currency`: the only currency of `costs`, or with several the model's price's")
    currency: str | None
    costs: dict[str, float] = Field(description="the sum in each currency (never added up)")


class Usage(_Answer):
    timezone: str
    rows: list[UsageRow]
    next_cursor: str | None = Field(description="the next page's `cursor`; null: no more rows")


# --- steering: dead letters and the audit trail -----------------------------------------------------------


class DeadLetter(_Answer):
    message_id: str
    task_id: str | None = Field(description="null: the message is unreadable")
    task_status: TaskStatus | None = Field(description="null: no such task")
    reason: str | None = Field(description="why it died: the task's last error, or the webhook's last attempt")
    receive_count: int
    sent_at: Timestamp | None


class DeadLetterQueue(_Answer):
    lane: str = Field(description="a lane's name, or `webhook-delivery`")
    approximate: int = Field(description="SQS's count of the messages it holds")
    messages: list[DeadLetter]


class DeadLetterList(_Answer):
    queues: list[DeadLetterQueue]


class DeadLettersReplayed(_Answer):
    replayed: int
    dropped: int
    dropped_reasons: dict[str, int] = Field(
        description="`task_finished`, `task_missing`, `unreadable`, `already_delivered`, `no_webhook`, "
                    "`already_replayed` (another replay sent it)")


class AuditEntry(_Answer):
    at: Timestamp
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(_Answer):
    entries: list[AuditEntry]
    next_cursor: str | None
