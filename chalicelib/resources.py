"""The one definition of arkflow's tables, queues and lanes.

The app (pynamodb models, queue URLs), the local stack's bootstrap and `infra/` all derive from this module,
so a table, index or lane is added here and nowhere else.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from chalicelib.ark import capabilities

AttributeType = Literal["S", "N"]
TaskType = Literal["image", "video"]


@dataclass(frozen=True)
class Key:
    name: str
    type: AttributeType = "S"


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: Key
    range_key: Key | None = None


@dataclass(frozen=True)
class Table:
    logical_name: str
    hash_key: Key
    range_key: Key | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None

    def physical_name(self, prefix: str) -> str:
        return f"{prefix}-{self.logical_name}"

    def index(self, name: str) -> Index:
        return next(index for index in self.indexes if index.name == name)

    def create_table_args(self, prefix: str) -> dict[str, Any]:
        """Name, keys, indexes and billing, in the shape DynamoDB's CreateTable and CloudFormation's
        `AWS::DynamoDB::Table` both take: the local stack and `infra/` build every table from this."""
        args: dict[str, Any] = {
            "TableName": self.physical_name(prefix),
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": key.name, "AttributeType": key.type} for key in self.key_attributes()
            ],
            "KeySchema": _key_schema(self.hash_key, self.range_key),
        }
        if self.indexes:
            args["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": _key_schema(index.hash_key, index.range_key),
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index in self.indexes
            ]
        return args

    def key_attributes(self) -> list[Key]:
        """Every attribute used as a table or index key, once each."""
        keys: dict[str, Key] = {}
        for key in (self.hash_key, self.range_key):
            if key:
                keys[key.name] = key
        for index in self.indexes:
            for key in (index.hash_key, index.range_key):
                if key:
                    keys[key.name] = key
        return list(keys.values())


def _key_schema(hash_key: Key, range_key: Key | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": hash_key.name, "KeyType": "HASH"}]
    if range_key:
        schema.append({"AttributeName": range_key.name, "KeyType": "RANGE"})
    return schema


# TTL attributes hold epoch seconds. DynamoDB deletes expired items lazily (moto never does), so every
# read of a TTL'd item checks the expiry itself.
# Keyed by username (names are unique while they exist); `user_id`, never reused, is what owns everything else.
USERS = Table("users", Key("username"))
SESSIONS = Table("sessions", Key("session_id"), ttl_attribute="expires_at_epoch")
# Login throttle counters; the key attribute keeps its first name, its values are throttle keys
# (`chalicelib.accounts.auth`).
LOGIN_ATTEMPTS = Table("login-attempts", Key("username"), ttl_attribute="expires_at_epoch")
MODELS = Table("models", Key("model_id"))
TASKS = Table(
    "tasks",
    Key("task_id"),
    indexes=(
        # A user's own tasks, newest first.
        Index("by_user", Key("user_id"), Key("created_key")),
        # Admin listing across users: write-sharded so no single partition takes every create.
        Index("by_list_shard", Key("list_shard"), Key("created_key")),
        # Sparse: only queued tasks carry `queued_model`, so counting queue position reads queued tasks only.
        Index("queued_by_model", Key("queued_model"), Key("created_key")),
        # Sparse: only parked tasks (no free slot, their message acknowledged) carry `parked_model`; a released
        # slot hands itself to the oldest of its model's (docs/design.md, "Parked tasks").
        Index("parked_by_model", Key("parked_model"), Key("created_key")),
        # Sparse: only video tasks running at Ark carry `poll_shard`; the poller reads what is due.
        Index("video_polls_due", Key("poll_shard"), Key("next_poll_at", "N")),
        # Sparse: only tasks with a webhook event not yet known to be queued carry `webhook_shard`; the sweeper
        # sends again what is due (`chalicelib.webhooks.outbox`).
        Index("webhooks_due", Key("webhook_shard"), Key("webhook_due", "N")),
        # Sparse: only finished tasks whose contribution to the metrics' roll-ups is not applied yet carry
        # `metrics_shard`; the sweeper's roll-up counts them in batches (`chalicelib.metrics.rollup`).
        Index("metrics_pending", Key("metrics_shard"), Key("metrics_due", "N")),
    ),
)
QUOTA = Table("quota", Key("quota_key"), ttl_attribute="expires_at_epoch")
SLOTS = Table("slots", Key("model_id"))
IDEMPOTENCY = Table("idempotency", Key("idempotency_key"), ttl_attribute="expires_at_epoch")
CONNECTIONS = Table(
    "connections",
    Key("connection_id"),
    indexes=(Index("by_user", Key("user_id")),),
    ttl_attribute="expires_at_epoch",
)
WS_TICKETS = Table("ws-tickets", Key("ticket_hash"), ttl_attribute="expires_at_epoch")
UPLOADS = Table("uploads", Key("upload_id"), ttl_attribute="expires_at_epoch")
# What a deployment did once and must never do again (`chalicelib.store.first_run`), e.g. create a default model.
MARKERS = Table("markers", Key("marker_id"))
# Which task owns each Ark video task: written conditionally before a task records an Ark id, so no two tasks
# ever hold one (reconciling a crashed create never adopts a video another task made).
ARK_TASK_OWNERS = Table("ark-task-owners", Key("external_id"), ttl_attribute="expires_at_epoch")
# A dead-letter replay's claim of each message it re-drives (`chalicelib.admin.dlq`), by queue and SQS message id:
# of parallel replays that received one message, only the claim's winner sends it. Kept past SQS's 14-day retention.
DEAD_LETTER_CLAIMS = Table("dead-letter-claims", Key("claim_key"), ttl_attribute="expires_at_epoch")
# API keys, keyed by the key's SHA-256 (a request's key is found with one read); each user's record holds the
# hashes of its keys (`chalicelib.accounts.keys`), which lists and counts them. No TTL: an expired key stays
# listed (and counted) until its owner deletes it.
API_KEYS = Table("api-keys", Key("key_hash"))
# Task creations per user per minute window (`chalicelib.store.rate_limit`); a window's counter outlives it briefly.
RATE_LIMITS = Table("rate-limits", Key("counter_key"), ttl_attribute="expires_at_epoch")
# Each user's webhook signing secret, and the one it replaced while that still signs (`chalicelib.webhooks.secrets`).
WEBHOOK_SECRETS = Table("webhook-secrets", Key("user_id"))
# A task's webhook events (who claimed each attempt) and every attempt made (`chalicelib.webhooks.delivery`).
WEBHOOK_DELIVERIES = Table("webhook-deliveries", Key("task_id"), Key("delivery_key"),
                           ttl_attribute="expires_at_epoch")
# The metrics' roll-ups (`chalicelib.metrics.rollup`): per model and time bucket (sharded), per day, model and user,
# Ark's errors and the queue's samples; `pk` names the series, `sk` the bucket.
METRICS = Table("metrics", Key("pk"), Key("sk"), ttl_attribute="expires_at_epoch")
# The audit trail (`chalicelib.audit.trail`): append-only, newest first by `entry_key` (time, then a unique tail).
# Every entry sits in one `feed` partition, read newest first for the unfiltered listing: admin actions and refunds
# are far below what one partition takes. No TTL: the trail is kept.
AUDIT = Table(
    "audit",
    Key("feed"),
    Key("entry_key"),
    indexes=(
        Index("by_actor", Key("actor"), Key("entry_key")),
        Index("by_target", Key("target"), Key("entry_key")),
    ),
)

TABLES: tuple[Table, ...] = (
    USERS,
    SESSIONS,
    LOGIN_ATTEMPTS,
    MODELS,
    TASKS,
    QUOTA,
    SLOTS,
    IDEMPOTENCY,
    CONNECTIONS,
    WS_TICKETS,
    UPLOADS,
    MARKERS,
    ARK_TASK_OWNERS,
    DEAD_LETTER_CLAIMS,
    API_KEYS,
    RATE_LIMITS,
    WEBHOOK_SECRETS,
    WEBHOOK_DELIVERIES,
    METRICS,
    AUDIT,
)

TASK_LIST_SHARDS = 4


@dataclass(frozen=True)
class Queue:
    """One SQS queue (with its DLQ) consumed by its own function."""

    name: str
    _: KW_ONLY
    reserved_concurrency: int
    # SQS event source `maximum_concurrency` must stay <= reserved concurrency, or throttled receives
    # push messages to the DLQ early. AWS's minimum for it is 2.
    maximum_concurrency: int
    lambda_timeout_s: int
    lambda_memory_mb: int = 512
    batch_size: int = 1
    max_receives: int = 8
    # SQS wants visibility >= 6x the function timeout for Lambda event sources.
    visibility_timeout_s: int = field(default=0)

    def __post_init__(self) -> None:
        if not self.visibility_timeout_s:
            object.__setattr__(self, "visibility_timeout_s", 6 * self.lambda_timeout_s)

    def queue_name(self, prefix: str) -> str:
        return f"{prefix}-{self.name}"

    def dlq_name(self, prefix: str) -> str:
        return f"{self.queue_name(prefix)}-dlq"

    def redrive_policy(self, dlq_arn: Any) -> dict[str, Any]:
        """SQS's RedrivePolicy for this queue (`dlq_arn` may be a CloudFormation reference)."""
        return {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": self.max_receives}

    @property
    def handler_name(self) -> str:
        """The Chalice function name of this queue's consumer (a valid Python identifier)."""
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class Lane(Queue):
    """A task lane: the queue of one kind of task, consumed by its own worker Lambda."""

    task_type: TaskType

    def queue_name(self, prefix: str) -> str:
        return f"{prefix}-lane-{self.name}"

    @property
    def handler_name(self) -> str:
        return "lane_" + self.name.replace("-", "_")


LANES: tuple[Lane, ...] = (
    Lane(
        "image",
        "image",
        reserved_concurrency=8,
        maximum_concurrency=8,
        lambda_timeout_s=300,
    ),
    Lane(
        "video",
        "video",
        reserved_concurrency=4,
        maximum_concurrency=4,
        # Ark answers a video create in seconds, but this worker also streams the finished video (and its last
        # frame) from Ark into the bucket, which can take minutes for a large file.
        lambda_timeout_s=300,
    ),
)


# Webhook deliveries: one message per event, sent again (delayed) for each retry (`chalicelib.webhooks.delivery`).
# An attempt takes at most a few seconds (`chalicelib.webhooks.sender`).
WEBHOOK_DELIVERY = Queue("webhook-delivery", reserved_concurrency=4, maximum_concurrency=4, lambda_timeout_s=60,
                         lambda_memory_mb=256)
# Every queue with its consumer: the lanes, then the others.
QUEUES: tuple[Queue, ...] = (*LANES, WEBHOOK_DELIVERY)


def lane_named(name: str) -> Lane:
    for lane in LANES:
        if lane.name == name:
            return lane
    raise KeyError(name)


def default_lane_for(task_type: TaskType) -> Lane:
    return next(lane for lane in LANES if lane.task_type == task_type)


@dataclass(frozen=True)
class Bucket:
    logical_name: str
    # Every object expires; results are re-signed on every read, so old copies are only cost.
    expire_days: int
    # Browser uploads land under `uploads_prefix` and are copied into their task when used: keep them briefly.
    uploads_prefix: str = "uploads/"
    uploads_expire_days: int = 1
    # A streamed copy that died mid-way leaves parts S3 bills for until aborted.
    abort_incomplete_multipart_days: int = 1

    def physical_name(self, prefix: str) -> str:
        return f"{prefix}-{self.logical_name}"


MEDIA_BUCKET = Bucket("media", expire_days=30)


@dataclass(frozen=True)
class DefaultModel:
    """A model every deployment starts with (`chalicelib.catalog.ensure_default_models`), calling `family` of the
    capability table at the deployment's provider."""

    model_id: str
    type: TaskType
    family: str
    display_name: str
    concurrency: int  # at most the table's concurrency at Ark, and well under it
    daily_quota: int
    # Ark activates models per account: in a deployed stage only these start enabled (the local stack enables all).
    enabled_when_deployed: bool

    @property
    def upstream_model(self) -> str:
        """Its Volcengine id (the simulator's)."""
        return capabilities.model(self.family).providers["volcengine"].model_id


DEFAULT_MODELS: tuple[DefaultModel, ...] = (
    DefaultModel("seedream-4.5", "image", "seedream-4.5", "Seedream 4.5", 4, 1000, True),
    DefaultModel("seedance-1.0-pro", "video", "seedance-1.0-pro", "Seedance 1.0 pro", 3, 200, True),
    DefaultModel("seedream-5.0-lite", "image", "seedream-5.0-lite", "Seedream 5.0 lite", 2, 500, False),
    DefaultModel("seedance-1.5-pro", "video", "seedance-1.5-pro", "Seedance 1.5 pro", 2, 100, False),
    DefaultModel("seedance-2.0", "video", "seedance-2.0", "Seedance 2.0", 2, 100, False),
)
