"""pynamodb records of arkflow's tables, derived from `chalicelib.resources`: each record's table and every index
(its keys, all attributes projected) come from the table's definition there, never restated here.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    Attribute,
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.connection import TableConnection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib import resources
from chalicelib.settings import Settings, get_settings
from chalicelib.store import writes


def table_meta(definition: resources.Table) -> type:
    """A record's `Meta`: its table as `resources` defines it (the deployment's name is set by `configure`)."""
    return type("Meta", (), {"table_name": definition.logical_name, "definition": definition})


def _key_attribute(key: resources.Key, **role: bool) -> Attribute[Any]:
    return UnicodeAttribute(**role) if key.type == "S" else NumberAttribute(**role)


def index_of(definition: resources.Table, name: str) -> Any:
    """The pynamodb index `name` of the table, with the keys `resources` gives it and every attribute projected."""
    index = definition.index(name)
    attributes = {index.hash_key.name: _key_attribute(index.hash_key, hash_key=True)}
    if index.range_key is not None:
        attributes[index.range_key.name] = _key_attribute(index.range_key, range_key=True)
    meta = type("Meta", (), {"index_name": name, "projection": AllProjection()})
    return type(f"{definition.logical_name}.{name}", (GlobalSecondaryIndex,), {"Meta": meta, **attributes})()


class _Base(Model):
    class Meta:
        abstract = True

    @classmethod
    def _get_connection(cls) -> TableConnection:
        """The record's table connection, sending through the container's one DynamoDB client
        (`writes.connection`): pynamodb would make each record a client (and a botocore session) of its own. Every
        record has pynamodb's default connection settings, so the client is the one it would have made."""
        table = super()._get_connection()
        if table.connection._client is None:
            table.connection._client = writes.connection().client
        return table


def optional_int(value: Any) -> int | None:
    """A nullable number attribute as an int (pynamodb reads numbers as floats)."""
    return None if value is None else int(value)


class UserRecord(_Base):
    Meta = table_meta(resources.USERS)

    username = UnicodeAttribute(hash_key=True)
    # The account's identity, never reused: tasks, quotas, uploads and sockets belong to it, not to the name,
    # so a new account with a deleted user's name starts empty. Missing only on accounts made before it existed
    # (`chalicelib.migrations` and the next login give them one).
    user_id = UnicodeAttribute(null=True)
    password_hash = UnicodeAttribute()
    role = UnicodeAttribute(default="user")
    disabled = BooleanAttribute(default=False)
    # Bumped on every password change; tokens carry it, so old tokens stop working.
    password_version = NumberAttribute(default=1)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    # Task creations allowed per minute (`chalicelib.store.rate_limit`); absent: the default.
    requests_per_minute = NumberAttribute(null=True)
    # The hashes of the account's API keys (`chalicelib.accounts.keys`): what lists, counts and bounds them.
    api_key_hashes = UnicodeSetAttribute(null=True)


class SessionRecord(_Base):
    Meta = table_meta(resources.SESSIONS)

    session_id = UnicodeAttribute(hash_key=True)
    username = UnicodeAttribute()
    # Missing on sessions opened before user ids: those no longer authenticate.
    user_id = UnicodeAttribute(null=True)
    # The user's password version at login: a password change ends the session (and its sockets).
    password_version = NumberAttribute(null=True)
    expires_at_epoch = NumberAttribute()


class LoginAttemptRecord(_Base):
    Meta = table_meta(resources.LOGIN_ATTEMPTS)

    # A throttle key of `chalicelib.auth.LoginThrottle`; the attribute keeps the table's original key name.
    throttle_key = UnicodeAttribute(hash_key=True, attr_name="username")
    # Attempts counted in the window that ends at `expires_at_epoch`.
    failures = NumberAttribute(default=0)
    expires_at_epoch = NumberAttribute()


class ModelRecord(_Base):
    Meta = table_meta(resources.MODELS)

    model_id = UnicodeAttribute(hash_key=True)
    type = UnicodeAttribute()
    upstream_model = UnicodeAttribute()
    # The capability table's model it calls (`chalicelib.ark.capabilities`): the one `upstream_model` names, or
    # the one an endpoint serves. Missing on models made before the table: found from `upstream_model` then.
    family = UnicodeAttribute(null=True)
    display_name = UnicodeAttribute()
    concurrency = NumberAttribute()
    daily_quota = NumberAttribute()
    user_daily_quota = NumberAttribute(null=True)
    max_running_per_user = NumberAttribute(null=True)
    lane = UnicodeAttribute()
    enabled = BooleanAttribute(default=True)
    defaults = JSONAttribute(null=True)
    # Set when Ark answered that the model or endpoint is not there for this account (`{at, code}`); cleared by
    # the next call Ark accepts, or by a change of upstream.
    upstream_unavailable = JSONAttribute(null=True)
    # What the model costs (`chalicelib.schemas.ModelPrice.stored`): `{currency, per_image | per_million_tokens |
    # per_second}`; absent: no price, its tasks have no cost.
    price = JSONAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()


class ErrorAttribute(MapAttribute[str, Any]):
    """An error a task records (`chalicelib.errors.error_object`'s shape)."""

    code = UnicodeAttribute()
    # For the task's user: arkflow's own words (Ark's text names internal ids).
    message = UnicodeAttribute()
    # What Ark said, capped (`chalicelib.ark.errors`): shown to admins only.
    upstream_message = UnicodeAttribute(null=True)


class TaskRecord(_Base):
    Meta = table_meta(resources.TASKS)

    task_id = UnicodeAttribute(hash_key=True)
    # The owner's account id (`UserRecord.user_id`), never its name.
    user_id = UnicodeAttribute()
    # The owner's username when the task was made, for admins' listings. Missing only on tasks written before
    # user ids, whose `user_id` still holds the name (`chalicelib.migrations` rewrites both).
    username = UnicodeAttribute(null=True)
    model_id = UnicodeAttribute()
    type = UnicodeAttribute()
    status = UnicodeAttribute()
    # A video's stage inside `running` (`chalicelib.video.stages`; docs/design.md, "Videos").
    stage = UnicodeAttribute(null=True)
    version = NumberAttribute(default=1)
    prompt = UnicodeAttribute(null=True)
    # References: https URLs as given, or `s3://bucket/key` for images stored by arkflow.
    images = ListAttribute(of=UnicodeAttribute, default=list)
    params = JSONAttribute(default=dict)
    # A video's reference media (`[{type, url}]`; stored images as `s3://` references), beside `images`, its
    # first/last frames: a task has one or the other.
    references = JSONAttribute(null=True)
    # A render of a draft: the draft task (arkflow's id) and the Ark task it renders.
    render_of = UnicodeAttribute(null=True)
    draft_external_id = UnicodeAttribute(null=True)
    upstream_model = UnicodeAttribute()
    # The capability table's model the task was judged against and is sent as (missing on older tasks).
    family = UnicodeAttribute(null=True)
    # `[{code, message, replacement}]` when its model was on its way out at submit time (deprecated).
    warnings = JSONAttribute(null=True)
    lane = UnicodeAttribute()
    external_id = UnicodeAttribute(null=True)
    error = ErrorAttribute(null=True)
    result_urls = ListAttribute(of=UnicodeAttribute, null=True)
    image_errors = JSONAttribute(null=True)
    video_url = UnicodeAttribute(null=True)
    last_frame_url = UnicodeAttribute(null=True)
    result_meta = JSONAttribute(null=True)
    # The model's price when the task was accepted, which its cost is counted at (`chalicelib.tasks.costs`).
    price = JSONAttribute(null=True)
    # Ark's `usage` of the task's generation as Ark answered it, and what that cost (a number rounded to 6 places, in
    # `currency`), both written with the terminal transition; `cost` null where it is not known.
    usage = JSONAttribute(null=True)
    cost = NumberAttribute(null=True)
    currency = UnicodeAttribute(null=True)
    # Why results could not be copied to the bucket; the task then keeps Ark's (24 h) URLs.
    results_copy_error = ErrorAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    started_at = UnicodeAttribute(null=True)
    finished_at = UnicodeAttribute(null=True)
    created_key = UnicodeAttribute()
    list_shard = UnicodeAttribute()
    queued_model = UnicodeAttribute(null=True)
    # Its number among its model's accepted tasks: `queue_position` is its distance from the oldest one queued.
    queue_seq = NumberAttribute(null=True)
    poll_shard = UnicodeAttribute(null=True)
    next_poll_at = NumberAttribute(null=True)
    poll_count = NumberAttribute(default=0)
    # Set by the first running callback applied: its callbacks arrive, so the poller is only its safety net.
    callbacks_arrive = BooleanAttribute(null=True)
    # Quota counters this task consumed; given back once if it ends before any Ark call.
    quota_keys = ListAttribute(of=UnicodeAttribute, default=list)
    quota_refunded = BooleanAttribute(default=False)
    # Whether Ark may have acted on a call for this task (a refusal with 429 does not count): no quota refund then.
    ark_called = BooleanAttribute(default=False)
    # The hash of the random callback secret of a video created before callback tokens were signed
    # (`chalicelib.video.status.callback_token`): its callbacks are checked against it.
    callback_secret_hash = UnicodeAttribute(null=True)
    # Reconciles of a video left `submitting` claim a round by bumping this, so only one may create at Ark.
    create_attempt = NumberAttribute(default=0)
    # Set while the task is parked (it found no free slot; its message left the queue): its model's id.
    parked_model = UnicodeAttribute(null=True)
    # Set (epoch seconds) when a released slot was handed to this queued task: its worker claims without an acquire.
    # The claim removes it; a hand-off never claimed is taken back by the sweeper after `HANDOFF_LEASE_S`.
    slot_handed_at = NumberAttribute(null=True)
    # The one call let through to its model's half-open circuit: its outcome closes or re-opens it.
    circuit_probe = BooleanAttribute(null=True)
    # Whether the slot this task holds took its user's slot too (`max_running_per_user`); unknown (absent) means
    # both are released.
    user_slot = BooleanAttribute(null=True)
    # A running video's deadline (epoch seconds): written with its claim (the value its slot lease holds too) and
    # again from its Ark create. The sweeper reads it as stored, so a changed setting never moves it.
    deadline_at = NumberAttribute(null=True)
    # Where the task's changes to `webhook_events` are posted (`chalicelib.webhooks`).
    webhook_url = UnicodeAttribute(null=True)
    webhook_events = ListAttribute(of=UnicodeAttribute, null=True)
    # The webhook outbox's mark (`chalicelib.webhooks.outbox`), written with a transition the webhook subscribes to
    # and removed once its event is on the webhook queue: the index's shard, when the mark was set (epoch seconds)
    # and the version of the write that set it.
    webhook_shard = UnicodeAttribute(null=True)
    webhook_due = NumberAttribute(null=True)
    webhook_due_by = NumberAttribute(null=True)
    # The metrics' mark (`chalicelib.metrics.rollup`), written with the terminal transition and removed with the
    # roll-up that counts the task: its index shard, and when it was set (epoch seconds). A mark whose apply failed
    # counts its failed runs; once set aside, uncounted, `metrics_failed` says why.
    metrics_shard = UnicodeAttribute(null=True)
    metrics_due = NumberAttribute(null=True)
    metrics_failures = NumberAttribute(null=True)
    metrics_failed = UnicodeAttribute(null=True)

    by_user = index_of(resources.TASKS, "by_user")
    by_list_shard = index_of(resources.TASKS, "by_list_shard")
    queued_by_model = index_of(resources.TASKS, "queued_by_model")
    parked_by_model = index_of(resources.TASKS, "parked_by_model")
    video_polls_due = index_of(resources.TASKS, "video_polls_due")
    webhooks_due = index_of(resources.TASKS, "webhooks_due")
    metrics_pending = index_of(resources.TASKS, "metrics_pending")


class QuotaRecord(_Base):
    Meta = table_meta(resources.QUOTA)

    quota_key = UnicodeAttribute(hash_key=True)
    used = NumberAttribute(default=0)
    expires_at_epoch = NumberAttribute()


class IdempotencyRecord(_Base):
    Meta = table_meta(resources.IDEMPOTENCY)

    idempotency_key = UnicodeAttribute(hash_key=True)
    # What the request was (`idempotency.fingerprint`); stored under its first name.
    fingerprint = UnicodeAttribute(attr_name="request_hash")
    task_id = UnicodeAttribute()
    status_code = NumberAttribute()
    response_body = JSONAttribute()
    expires_at_epoch = NumberAttribute()


class SlotRecord(_Base):
    Meta = table_meta(resources.SLOTS)

    model_id = UnicodeAttribute(hash_key=True)
    holders = MapAttribute[str, Any](default=dict)
    # task id -> user id, beside `holders`: freeing a vanished task's slot frees its user's slot too.
    owners = MapAttribute[str, Any](default=dict)
    count = NumberAttribute(default=0)
    # The model's `concurrency` and `max_running_per_user`, written with the model itself (`slots.configure_in`):
    # an acquire's condition reads them here, so it needs no model read and a change applies to the next acquire.
    limit = NumberAttribute(null=True)
    user_cap = NumberAttribute(null=True)
    # Tasks parked on this model (`parked_by_model`), counted by parks and hand-offs: a release that finds it 0
    # reads no index. Never below the truth (an end of a parked task counts down too); above it costs one read.
    parked = NumberAttribute(null=True)
    # Tasks accepted so far: each takes the next number as its `queue_seq` (`slots.take_queue_number`).
    accepted = NumberAttribute(null=True)
    # The model's circuit breaker (`chalicelib.lanes.circuit`): absent when closed, else "open" or "half_open"
    # (an acquire's condition is that it is absent), since when, why, since when it has not been closed, from
    # when a probe may go out, and the probe's task id.
    circuit = UnicodeAttribute(null=True)
    circuit_since = NumberAttribute(null=True)
    circuit_reason = UnicodeAttribute(null=True)
    circuit_opened_at = NumberAttribute(null=True)
    circuit_retry_at = NumberAttribute(null=True)
    circuit_probe = UnicodeAttribute(null=True)
    # Ark's retryable failures counted in the window that began at `ark_failures_since`.
    ark_failures = NumberAttribute(null=True)
    ark_failures_since = NumberAttribute(null=True)
    # Recent [opened, closed] spans of the circuit: time queued tasks waited on it is not counted to their deadline.
    circuit_outages = JSONAttribute(null=True)


class ConnectionRecord(_Base):
    """An open API Gateway WebSocket connection and the user it was opened for."""

    Meta = table_meta(resources.CONNECTIONS)

    connection_id = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    # The login session whose ticket opened it: logging that session out closes the connection.
    session_id = UnicodeAttribute(null=True)
    connected_at = UnicodeAttribute()
    expires_at_epoch = NumberAttribute()

    by_user = index_of(resources.CONNECTIONS, "by_user")


class WsTicketRecord(_Base):
    """A single-use WebSocket ticket; only its hash is stored, so the table never holds a usable ticket."""

    Meta = table_meta(resources.WS_TICKETS)

    ticket_hash = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    # The login session that asked for it: `$connect` checks it is still live (null: an older ticket).
    session_id = UnicodeAttribute(null=True)
    expires_at_epoch = NumberAttribute()


class UploadRecord(_Base):
    """An image a user uploads straight to S3 with a presigned POST; only that user may name it in a task."""

    Meta = table_meta(resources.UPLOADS)

    upload_id = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    object_key = UnicodeAttribute()
    content_type = UnicodeAttribute()
    max_bytes = NumberAttribute()
    created_at = UnicodeAttribute()
    expires_at_epoch = NumberAttribute()
    # The ETag of the object the first task to name the upload copied: every later task must find that same object.
    used_etag = UnicodeAttribute(null=True)


class MarkerRecord(_Base):
    """Something this deployment did once (`chalicelib.first_run`); its existence is all it says."""

    Meta = table_meta(resources.MARKERS)

    marker_id = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute()


class ArkTaskOwnerRecord(_Base):
    """The one task that owns an Ark video task (written before the task records the id, conditionally)."""

    Meta = table_meta(resources.ARK_TASK_OWNERS)

    external_id = UnicodeAttribute(hash_key=True)
    task_id = UnicodeAttribute()
    expires_at_epoch = NumberAttribute()


class DeadLetterClaimRecord(_Base):
    """A replay's claim of one dead letter (`chalicelib.admin.dlq`): held by `replay_id` until `lease_until` (then
    another replay may take it over: the first died before sending), `sent` once the message was re-driven."""

    Meta = table_meta(resources.DEAD_LETTER_CLAIMS)

    claim_key = UnicodeAttribute(hash_key=True)
    replay_id = UnicodeAttribute()
    lease_until = NumberAttribute()
    sent = BooleanAttribute(null=True)  # absent until sent: the claim's condition reads its absence
    expires_at_epoch = NumberAttribute()


class ApiKeyRecord(_Base):
    """An API key, found by its hash (the key itself is never stored); `key_id` is how its owner names it."""

    Meta = table_meta(resources.API_KEYS)

    key_hash = UnicodeAttribute(hash_key=True)
    key_id = UnicodeAttribute()
    # The owning account: both, as sessions do (the name finds the user, the id says it is still the same one).
    user_id = UnicodeAttribute()
    username = UnicodeAttribute()
    name = UnicodeAttribute()
    scopes = ListAttribute(of=UnicodeAttribute)
    # The key's first characters, shown in listings so a user can tell keys apart.
    prefix = UnicodeAttribute()
    created_at = UnicodeAttribute()
    expires_at_epoch = NumberAttribute(null=True)
    # Written at most once a minute per key, not on every request.
    last_used_epoch = NumberAttribute(null=True)


class RateLimitRecord(_Base):
    Meta = table_meta(resources.RATE_LIMITS)

    counter_key = UnicodeAttribute(hash_key=True)
    used = NumberAttribute(default=0)
    expires_at_epoch = NumberAttribute()


class WebhookSecretRecord(_Base):
    """A user's webhook signing secret (`chalicelib.webhooks.secrets`): never logged, never in a task or a body but
    the secret route's."""

    Meta = table_meta(resources.WEBHOOK_SECRETS)

    user_id = UnicodeAttribute(hash_key=True)
    secret = UnicodeAttribute()
    # The secret a rotation replaced: it signs beside `secret` until `previous_until` (epoch seconds).
    previous_secret = UnicodeAttribute(null=True)
    previous_until = NumberAttribute(null=True)
    created_at = UnicodeAttribute()
    rotated_at = UnicodeAttribute(null=True)


class WebhookEventRecord(_Base):
    """One webhook event of a task (`delivery_key` `event#<webhook-id>`): which attempt was claimed last, by which
    SQS message, and how the event ended (`chalicelib.webhooks.delivery`)."""

    Meta = table_meta(resources.WEBHOOK_DELIVERIES)

    task_id = UnicodeAttribute(hash_key=True)
    delivery_key = UnicodeAttribute(range_key=True)
    attempt = NumberAttribute()
    message_id = UnicodeAttribute()
    outcome = UnicodeAttribute(null=True)
    expires_at_epoch = NumberAttribute()


class WebhookAttemptRecord(_Base):
    """One attempt to deliver a webhook (`delivery_key` `attempt#<at>#<webhook-id>#<n>`: a task's attempts in the
    order they were made)."""

    Meta = table_meta(resources.WEBHOOK_DELIVERIES)

    task_id = UnicodeAttribute(hash_key=True)
    delivery_key = UnicodeAttribute(range_key=True)
    webhook_id = UnicodeAttribute()
    type = UnicodeAttribute()
    attempt = NumberAttribute()
    at = UnicodeAttribute()
    status_code = NumberAttribute(null=True)
    duration_ms = NumberAttribute()
    error = UnicodeAttribute(null=True)
    # What came next: `delivered`, `retrying` (at `next_attempt_at`) or `failed` (no retry).
    outcome = UnicodeAttribute()
    next_attempt_at = UnicodeAttribute(null=True)
    expires_at_epoch = NumberAttribute()


class AuditRecord(_Base):
    """One entry of the audit trail (`chalicelib.audit.trail`): written once, never changed."""

    Meta = table_meta(resources.AUDIT)

    feed = UnicodeAttribute(hash_key=True)
    # `<at>#<unique tail>`: entries sort by time; the tail keeps two entries of one millisecond apart.
    entry_key = UnicodeAttribute(range_key=True)
    at = UnicodeAttribute()
    actor = UnicodeAttribute()
    action = UnicodeAttribute()
    target = UnicodeAttribute()
    before = JSONAttribute(null=True)
    after = JSONAttribute(null=True)
    by_actor = index_of(resources.AUDIT, "by_actor")
    by_target = index_of(resources.AUDIT, "by_target")


ALL_RECORDS: tuple[type[_Base], ...] = (
    UserRecord,
    SessionRecord,
    LoginAttemptRecord,
    ModelRecord,
    TaskRecord,
    QuotaRecord,
    IdempotencyRecord,
    SlotRecord,
    ConnectionRecord,
    WsTicketRecord,
    UploadRecord,
    MarkerRecord,
    ArkTaskOwnerRecord,
    DeadLetterClaimRecord,
    ApiKeyRecord,
    RateLimitRecord,
    WebhookSecretRecord,
    WebhookEventRecord,
    WebhookAttemptRecord,
    AuditRecord,
)


def configure(settings: Settings | None = None) -> None:
    """Point every record at this deployment's tables; drops cached connections (endpoints may have changed)."""
    settings = settings or get_settings()
    writes.forget_connection()
    for record in ALL_RECORDS:
        record.Meta.table_name = record.Meta.definition.physical_name(settings.resource_prefix)
        record.Meta.region = settings.region
        record._connection = None


configure()
