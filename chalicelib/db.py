"""pynamodb models of arkflow's tables. Keys and index shapes come from `chalicelib.resources`.

Also how a failed write is read: only a false condition means another writer got there first (`condition_failed`);
anything else (throttling, an internal error, a transaction conflict) is an error that says nothing about the
item, to be retried, never taken as a lost race.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, ClassVar

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib import resources
from chalicelib.settings import Settings, get_settings


class _Base(Model):
    definition: ClassVar[resources.Table]

    class Meta:
        abstract = True


def optional_int(value: Any) -> int | None:
    """A nullable number attribute as an int (pynamodb reads numbers as floats)."""
    return None if value is None else int(value)


class UserRecord(_Base):
    definition = resources.USERS

    class Meta:
        table_name = "users"

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


class SessionRecord(_Base):
    definition = resources.SESSIONS

    class Meta:
        table_name = "sessions"

    session_id = UnicodeAttribute(hash_key=True)
    username = UnicodeAttribute()
    # Missing on sessions opened before user ids: those no longer authenticate.
    user_id = UnicodeAttribute(null=True)
    # The user's password version at login: a password change ends the session (and its sockets).
    password_version = NumberAttribute(null=True)
    expires_at_epoch = NumberAttribute()


class LoginAttemptRecord(_Base):
    definition = resources.LOGIN_ATTEMPTS

    class Meta:
        table_name = "login-attempts"

    # A throttle key of `chalicelib.auth.LoginThrottle`; the attribute keeps the table's original key name.
    throttle_key = UnicodeAttribute(hash_key=True, attr_name="username")
    # Attempts counted in the window that ends at `expires_at_epoch`.
    failures = NumberAttribute(default=0)
    expires_at_epoch = NumberAttribute()


class ModelRecord(_Base):
    definition = resources.MODELS

    class Meta:
        table_name = "models"

    model_id = UnicodeAttribute(hash_key=True)
    type = UnicodeAttribute()
    upstream_model = UnicodeAttribute()
    display_name = UnicodeAttribute()
    concurrency = NumberAttribute()
    daily_quota = NumberAttribute()
    user_daily_quota = NumberAttribute(null=True)
    max_running_per_user = NumberAttribute(null=True)
    lane = UnicodeAttribute()
    enabled = BooleanAttribute(default=True)
    defaults = JSONAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()


class _ByUser(GlobalSecondaryIndex["TaskRecord"]):
    class Meta:
        index_name = "by_user"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class _ByListShard(GlobalSecondaryIndex["TaskRecord"]):
    class Meta:
        index_name = "by_list_shard"
        projection = AllProjection()

    list_shard = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class _QueuedByModel(GlobalSecondaryIndex["TaskRecord"]):
    class Meta:
        index_name = "queued_by_model"
        projection = AllProjection()

    queued_model = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class _VideoPollsDue(GlobalSecondaryIndex["TaskRecord"]):
    class Meta:
        index_name = "video_polls_due"
        projection = AllProjection()

    poll_shard = UnicodeAttribute(hash_key=True)
    next_poll_at = NumberAttribute(range_key=True)


class TaskError(MapAttribute[str, Any]):
    code = UnicodeAttribute()
    # For the task's user: arkflow's own words (Ark's text names internal ids).
    message = UnicodeAttribute()
    # What Ark said, capped (`chalicelib.ark.errors`): shown to admins only.
    upstream_message = UnicodeAttribute(null=True)


class TaskRecord(_Base):
    definition = resources.TASKS

    class Meta:
        table_name = "tasks"

    task_id = UnicodeAttribute(hash_key=True)
    # The owner's account id (`UserRecord.user_id`), never its name.
    user_id = UnicodeAttribute()
    # The owner's username when the task was made, for admins' listings. Missing only on tasks written before
    # user ids, whose `user_id` still holds the name (`chalicelib.migrations` rewrites both).
    username = UnicodeAttribute(null=True)
    model_id = UnicodeAttribute()
    type = UnicodeAttribute()
    status = UnicodeAttribute()
    # Sub-step inside `running` for video: `submitting` before the Ark create, `submitted` after.
    stage = UnicodeAttribute(null=True)
    version = NumberAttribute(default=1)
    prompt = UnicodeAttribute(null=True)
    # References: https URLs as given, or `s3://bucket/key` for images stored by arkflow.
    images = ListAttribute(of=UnicodeAttribute, default=list)
    params = JSONAttribute(default=dict)
    upstream_model = UnicodeAttribute()
    lane = UnicodeAttribute()
    external_id = UnicodeAttribute(null=True)
    error = TaskError(null=True)
    result_urls = ListAttribute(of=UnicodeAttribute, null=True)
    image_errors = JSONAttribute(null=True)
    video_url = UnicodeAttribute(null=True)
    last_frame_url = UnicodeAttribute(null=True)
    result_meta = JSONAttribute(null=True)
    # Why results could not be copied to the bucket; the task then keeps Ark's (24 h) URLs.
    results_copy_error = TaskError(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    started_at = UnicodeAttribute(null=True)
    finished_at = UnicodeAttribute(null=True)
    created_key = UnicodeAttribute()
    list_shard = UnicodeAttribute()
    queued_model = UnicodeAttribute(null=True)
    poll_shard = UnicodeAttribute(null=True)
    next_poll_at = NumberAttribute(null=True)
    poll_count = NumberAttribute(default=0)
    # Quota counters this task consumed; given back once if it ends before any Ark call.
    quota_keys = ListAttribute(of=UnicodeAttribute, default=list)
    quota_refunded = BooleanAttribute(default=False)
    # Whether Ark may have acted on a call for this task (a refusal with 429 does not count): no quota refund then.
    ark_called = BooleanAttribute(default=False)
    callback_secret_hash = UnicodeAttribute(null=True)
    # Reconciles of a video left `submitting` claim a round by bumping this, so only one may create at Ark.
    create_attempt = NumberAttribute(default=0)
    # The receipt of the message deferred for want of a slot: a released slot makes that message visible at once.
    wait_receipt = UnicodeAttribute(null=True)
    # A running video's deadline (epoch seconds): written with its claim (the value its slot lease holds too) and
    # again from its Ark create. The sweeper reads it as stored, so a changed setting never moves it.
    deadline_at = NumberAttribute(null=True)

    by_user = _ByUser()
    by_list_shard = _ByListShard()
    queued_by_model = _QueuedByModel()
    video_polls_due = _VideoPollsDue()


class QuotaRecord(_Base):
    definition = resources.QUOTA

    class Meta:
        table_name = "quota"

    quota_key = UnicodeAttribute(hash_key=True)
    used = NumberAttribute(default=0)
    expires_at_epoch = NumberAttribute()


class IdempotencyRecord(_Base):
    definition = resources.IDEMPOTENCY

    class Meta:
        table_name = "idempotency"

    idempotency_key = UnicodeAttribute(hash_key=True)
    request_hash = UnicodeAttribute()
    task_id = UnicodeAttribute()
    status_code = NumberAttribute()
    response_body = JSONAttribute()
    expires_at_epoch = NumberAttribute()


class SlotRecord(_Base):
    definition = resources.SLOTS

    class Meta:
        table_name = "slots"

    model_id = UnicodeAttribute(hash_key=True)
    holders = MapAttribute[str, Any](default=dict)
    # task id -> user id, beside `holders`: freeing a vanished task's slot frees its user's slot too.
    owners = MapAttribute[str, Any](default=dict)
    count = NumberAttribute(default=0)


class _ConnectionsByUser(GlobalSecondaryIndex["ConnectionRecord"]):
    class Meta:
        index_name = "by_user"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True)


class ConnectionRecord(_Base):
    """An open API Gateway WebSocket connection and the user it was opened for."""

    definition = resources.CONNECTIONS

    class Meta:
        table_name = "connections"

    connection_id = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    # The login session whose ticket opened it: logging that session out closes the connection.
    session_id = UnicodeAttribute(null=True)
    connected_at = UnicodeAttribute()
    expires_at_epoch = NumberAttribute()

    by_user = _ConnectionsByUser()


class WsTicketRecord(_Base):
    """A single-use WebSocket ticket; only its hash is stored, so the table never holds a usable ticket."""

    definition = resources.WS_TICKETS

    class Meta:
        table_name = "ws-tickets"

    ticket_hash = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    # The login session that asked for it: `$connect` checks it is still live (null: an older ticket).
    session_id = UnicodeAttribute(null=True)
    expires_at_epoch = NumberAttribute()


class UploadRecord(_Base):
    """An image a user uploads straight to S3 with a presigned POST; only that user may name it in a task."""

    definition = resources.UPLOADS

    class Meta:
        table_name = "uploads"

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

    definition = resources.MARKERS

    class Meta:
        table_name = "markers"

    marker_id = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute()


class ArkTaskOwnerRecord(_Base):
    """The one task that owns an Ark video task (written before the task records the id, conditionally)."""

    definition = resources.ARK_TASK_OWNERS

    class Meta:
        table_name = "ark-task-owners"

    external_id = UnicodeAttribute(hash_key=True)
    task_id = UnicodeAttribute()
    expires_at_epoch = NumberAttribute()


ALL_MODELS: tuple[type[_Base], ...] = (
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
)

CONDITION_FAILED = "ConditionalCheckFailedException"
# Cancellation reasons that mean "another request was writing the item at that moment": nothing was written and
# no condition was judged false, so the same transaction may simply run again.
_RETRYABLE_CANCELLATIONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
TRANSACTION_ATTEMPTS = 5
TRANSACTION_BACKOFF_S = 0.025


_transaction_connection: Connection | None = None


def transaction() -> TransactWrite:
    """A DynamoDB transaction over arkflow's tables (pynamodb sends condition checks, puts, then updates)."""
    global _transaction_connection
    if _transaction_connection is None:
        _transaction_connection = Connection(region=get_settings().region)
    return TransactWrite(connection=_transaction_connection)


def condition_failed(error: PynamoDBException) -> bool:
    """Whether DynamoDB refused the write because one of its conditions was false: the one failure that means
    "the item is not as the writer read it". A transaction counts when any of its items failed its condition."""
    code = error.cause_response_code
    if code == CONDITION_FAILED:
        return True
    return code == "TransactionCanceledException" and isinstance(error, TransactWriteError) and any(
        reason is not None and reason.code == "ConditionalCheckFailed" for reason in error.cancellation_reasons)


def transaction_conflicted(error: TransactWriteError) -> bool:
    """A transaction cancelled only because another request was writing one of its items at once. Real DynamoDB
    does this to concurrent transactions on one item (moto never does), and botocore does not retry it."""
    if error.cause_response_code != "TransactionCanceledException":
        return False
    codes = {reason.code for reason in error.cancellation_reasons if reason is not None}
    return bool(codes) and codes <= _RETRYABLE_CANCELLATIONS


def is_write_conflict(error: Exception) -> bool:
    """A single-item write refused because a transaction was writing the same item at that moment."""
    if isinstance(error, PynamoDBException):
        code = error.cause_response_code
    else:
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
    return code == "TransactionConflictException"


def pause_before_retry(attempt: int, sleep: Callable[[float], None] = time.sleep) -> None:
    """A jittered pause that grows with each attempt (full jitter: retries of racing writers spread out)."""
    sleep(random.uniform(0, TRANSACTION_BACKOFF_S * 2 ** attempt))


def write_transaction(build: Callable[[TransactWrite], None], *, attempts: int = TRANSACTION_ATTEMPTS) -> None:
    """Run the transaction `build` fills in; one cancelled by a conflict runs again after a jittered,
    growing pause (it wrote nothing, and its conditions are judged afresh). The last conflict, and every other
    failure, is raised."""
    for attempt in range(attempts):
        try:
            with transaction() as writes:
                build(writes)
            return
        except TransactWriteError as error:
            if attempt == attempts - 1 or not transaction_conflicted(error):
                raise
        pause_before_retry(attempt)


def configure(settings: Settings | None = None) -> None:
    """Point every model at this deployment's tables; drops cached connections (endpoints may have changed)."""
    global _transaction_connection
    settings = settings or get_settings()
    _transaction_connection = None
    for model in ALL_MODELS:
        model.Meta.table_name = settings.table_name(model.definition.logical_name)
        model.Meta.region = settings.region
        model._connection = None


configure()
