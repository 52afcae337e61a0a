"""The metrics' roll-ups: each finished task counted once into its model's time buckets, off the request path and
never inside the task's own transition (docs/design.md, "Metrics").

* `mark` (a state machine write hook) rides on the terminal transition's own write: a sparse mark on the task
  (`metrics_shard`, `metrics_due`), no request more.
* `record_finished` (a state machine listener) then applies the task's contribution and removes the mark in ONE
  transaction (the one request a finished task costs): its model's 5-minute and hour buckets (`fine#`, `hour#`,
  sharded by task so concurrent ends rarely meet on one item), its day's usage row (`usage#`), and the task's
  update whose condition is the mark itself. A crash before it leaves the mark; a second call (a duplicate
  notification, the sweeper racing the listener) finds the mark gone and writes nothing, so no contribution is
  ever lost or counted twice.
* `apply_due` (the sweeper) applies what stays marked past `GRACE_S`, a page per sweep, from the sparse
  `metrics_pending` index.
* `count_ark_error`: one ADD per 429 / 5xx Ark answered (a retry's rare path), into the model's 5-minute bucket.
* `sample_queue`: the sweeper's sample of a model's queued / running, one per 5 minutes (the first sweep of a slot).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.update import Action

from chalicelib import aws, resources
from chalicelib.clock import epoch_of
from chalicelib.metrics import histogram
from chalicelib.settings import get_settings
from chalicelib.store import statemachine, writes
from chalicelib.store.marks import marked_before
from chalicelib.store.records import TaskRecord

log = logging.getLogger(__name__)

# Shards of a model's time bucket: finished tasks of one model write one of these items each (a transaction meeting
# another on one item is cancelled and runs again), and a read of a window queries each once.
SHARDS = 4
# Shards of the `metrics_pending` index (each mark writes it twice: set, then removed); the sweeper reads each.
MARK_SHARDS = 2
# How old a mark is before the sweeper applies it: the listener applies it within milliseconds of the write.
GRACE_S = 60
PAGE = 100
FINE_S, HOUR_S, DAY_S = 300, 3600, 86400
# What each item kind is kept for (the longest window it serves, and some): the 24 h window, `days` <= 31.
FINE_KEEP_S, HOUR_KEEP_S, USAGE_KEEP_S = 2 * DAY_S, 3 * DAY_S, 35 * DAY_S
# Error codes are Ark's or arkflow's (an operator's too): one that is not a short plain code counts as `other`, so a
# bucket's attributes stay few and small (DynamoDB's 400 KB item).
PLAIN_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# `outcomes` counts statuses and error codes under one name each: a code that names a status is never counted as it.
STATUSES = frozenset({statemachine.QUEUED, statemachine.RUNNING, *statemachine.TERMINAL})


def table_name() -> str:
    return resources.METRICS.physical_name(get_settings().resource_prefix)


def _shard(task_id: str, shards: int) -> int:
    return int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % shards


def mark_shard_name(shard: int) -> str:
    return f"metrics-{shard}"


# --- keys ----------------------------------------------------------------------------------------------------


def fine_sk(moment: float) -> str:
    """The 5-minute bucket holding `moment` (UTC), as `YYYY-MM-DDTHH:MM`."""
    start = int(moment // FINE_S * FINE_S)
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M")


def hour_sk(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H")


def rollup_pk(kind: str, model_id: str, shard: int) -> str:
    return f"{kind}#{model_id}#{shard}"


def usage_pk(day: str, shard: int) -> str:
    return f"usage#{day}#{shard}"


def ark_pk(model_id: str) -> str:
    return f"ark#{model_id}"


def queue_pk(model_id: str) -> str:
    return f"queue#{model_id}"


def day_of(moment: float, zone: str) -> str:
    return datetime.fromtimestamp(moment, ZoneInfo(zone)).strftime("%Y-%m-%d")


# --- the mark --------------------------------------------------------------------------------------------------


def mark(task: TaskRecord, target: str, moment: float) -> list[Action]:
    """The terminal transition's mark (a write hook): what the listener, or else the sweeper, counts."""
    if target not in statemachine.TERMINAL:
        return []
    return [TaskRecord.metrics_shard.set(mark_shard_name(_shard(task.task_id, MARK_SHARDS))),
            TaskRecord.metrics_due.set(moment)]


# --- a task's contribution ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contribution:
    model_id: str
    shard: int
    finished: float
    status: str
    error_code: str | None
    wait_s: float | None  # accepted -> running (its last start)
    run_s: float | None  # running -> terminal
    cost: float | None
    currency: str | None
    user_id: str
    username: str


def contribution_of(task: TaskRecord) -> Contribution:
    finished = epoch_of(task.finished_at) if task.finished_at else float(task.metrics_due or 0)
    started = epoch_of(task.started_at) if task.started_at else None
    code = task.error.code if task.error is not None and task.error.code else None
    cost = getattr(task, "cost", None)
    return Contribution(
        model_id=task.model_id, shard=_shard(task.task_id, SHARDS), finished=finished, status=task.status,
        error_code=_error_code(code, task.status),
        wait_s=None if started is None else max(0.0, started - epoch_of(task.created_at)),
        run_s=None if started is None else max(0.0, finished - started),
        cost=None if cost is None else float(cost), currency=getattr(task, "currency", None),
        user_id=task.user_id, username=task.username or task.user_id)


def _error_code(code: str | None, status: str) -> str | None:
    """The error code a task counts under beside its status: none for one that repeats it (Ark's expiry ends a video
    `expired` with the code `expired`: one task, one outcome), `other` for one that names another status (an
    operator's) or is no plain short code."""
    if not code or code == status:
        return None
    return "other" if code in STATUSES or not PLAIN_CODE.match(code) else code


class _Update:
    """One UpdateItem of a transaction: ADDs and SETs under placeholder names."""

    def __init__(self) -> None:
        self.adds: list[str] = []
        self.sets: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def _placeholders(self, name: str, value: Any) -> tuple[str, str]:
        n = len(self.names)
        self.names[f"#a{n}"] = name
        self.values[f":v{n}"] = value
        return f"#a{n}", f":v{n}"

    def add(self, name: str, amount: int | float | Decimal) -> None:
        key, value = self._placeholders(name, {"N": str(amount)})
        self.adds.append(f"{key} {value}")

    def set(self, name: str, value: str | int) -> None:
        key, placeholder = self._placeholders(name, {"N": str(value)} if isinstance(value, int) else {"S": value})
        self.sets.append(f"{key} = {placeholder}")

    def item(self, pk: str, sk: str) -> dict[str, Any]:
        expression = " ".join(part for part in (
            "ADD " + ", ".join(self.adds) if self.adds else "",
            "SET " + ", ".join(self.sets) if self.sets else "") if part)
        return {"Update": {"TableName": table_name(), "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
                           "UpdateExpression": expression, "ExpressionAttributeNames": self.names,
                           "ExpressionAttributeValues": self.values}}


def _bucket_update(part: Contribution, keep_until: int) -> _Update:
    update = _Update()
    update.add("n", 1)
    update.add(f"s:{part.status}", 1)
    if part.error_code:
        update.add(f"e:{part.error_code}", 1)
    if part.wait_s is not None:
        update.add(f"w{histogram.bucket_of(part.wait_s)}", 1)
    if part.run_s is not None:
        update.add(f"r{histogram.bucket_of(part.run_s)}", 1)
    if part.cost is not None:
        update.add("cost", Decimal(repr(part.cost)))
        if part.currency:
            update.set("currency", part.currency)
    update.set("expires_at_epoch", keep_until)
    return update


def _usage_update(part: Contribution, day: str, keep_until: int) -> _Update:
    update = _Update()
    update.add("requests", 1)
    if part.status in (statemachine.SUCCEEDED, statemachine.FAILED):
        update.add(part.status, 1)
    if part.cost is not None:
        update.add("cost", Decimal(repr(part.cost)))
        if part.currency:
            update.set("currency", part.currency)
    for name, value in (("day", day), ("model_id", part.model_id), ("user_id", part.user_id),
                        ("username", part.username)):
        update.set(name, value)
    update.set("expires_at_epoch", keep_until)
    return update


def contribution_items(task: TaskRecord) -> list[dict[str, Any]]:
    """The transaction that counts `task` and takes its mark off, if the mark is still the one it read."""
    part = contribution_of(task)
    day = day_of(part.finished, get_settings().quota_timezone)
    fine = _bucket_update(part, int(part.finished) + FINE_KEEP_S)
    hour = _bucket_update(part, int(part.finished) + HOUR_KEEP_S)
    usage = _usage_update(part, day, int(part.finished) + USAGE_KEEP_S)
    return [
        fine.item(rollup_pk("fine", part.model_id, part.shard), fine_sk(part.finished)),
        hour.item(rollup_pk("hour", part.model_id, part.shard), hour_sk(part.finished)),
        usage.item(usage_pk(day, part.shard), f"{part.model_id}#{part.user_id}"),
        {"Update": {"TableName": TaskRecord.Meta.table_name, "Key": {"task_id": {"S": task.task_id}},
                    "UpdateExpression": "REMOVE metrics_shard, metrics_due",
                    "ConditionExpression": "metrics_due = :due",
                    "ExpressionAttributeValues": {":due": {"N": _number(task.metrics_due)}}}},
    ]


def _number(value: Any) -> str:
    """A stored number as DynamoDB wrote it (pynamodb reads numbers as floats: 1764626400.5 -> '1764626400.5')."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def apply(task: TaskRecord) -> bool:
    """Count `task` (as read, marked) once: True when this call counted it, False when its mark was gone (counted
    already, or the task deleted). Raises what DynamoDB raised otherwise (the mark then stays for the sweeper)."""
    if task.metrics_due is None or task.status not in statemachine.TERMINAL:
        return False
    items = contribution_items(task)
    for attempt in range(writes.TRANSACTION_ATTEMPTS):
        try:
            aws.client("dynamodb").transact_write_items(TransactItems=items)
        except ClientError as error:
            reasons = [reason.get("Code") for reason in error.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons:
                task.metrics_shard = task.metrics_due = None
                return False
            conflicted = error.response.get("Error", {}).get("Code") == "TransactionCanceledException" and \
                bool(reasons) and set(reasons) <= {"None", None, "TransactionConflict", "ThrottlingError"}
            if not conflicted or attempt == writes.TRANSACTION_ATTEMPTS - 1:
                raise
            writes.pause_before_retry(attempt)
            continue
        task.metrics_shard = task.metrics_due = None
        return True
    return False  # pragma: no cover - the loop returns or raises


def record_finished(task: TaskRecord) -> None:
    """The state machine's listener: a task just written terminal (marked) is counted now. Never raises: the mark
    stays for the sweeper."""
    if task.metrics_due is None or task.status not in statemachine.TERMINAL:
        return
    try:
        apply(task)
    except (ClientError, BotoCoreError) as error:
        log.warning("metrics of task %s left to the sweeper: %s", task.task_id, error)


def due(now: float) -> Iterator[TaskRecord]:
    """Marked tasks whose mark is older than the grace (their listener did not count them), a page at most."""
    return marked_before(TaskRecord.metrics_pending, map(mark_shard_name, range(MARK_SHARDS)), TaskRecord.metrics_due,
                         now - GRACE_S, PAGE)


def apply_due(now: float) -> int:
    """The sweeper's part: count what stayed marked past the grace (a listener that died or failed)."""
    applied = 0
    for task in due(now):
        try:
            applied += apply(task)
        except (ClientError, BotoCoreError, PynamoDBException) as error:
            log.warning("metrics of task %s left for the next sweep: %s", task.task_id, error)
    return applied


# --- Ark's errors and the queue's samples ---------------------------------------------------------------------


def count_ark_error(model_id: str, http_status: int | None, now: float) -> None:
    """Count an Ark answer of 429 or 5xx for `model_id` (one ADD; anything else is not counted). Never raises."""
    if http_status == 429:
        counter = "ark_429"
    elif http_status is not None and http_status >= 500:
        counter = "ark_5xx"
    else:
        return
    try:
        aws.client("dynamodb").update_item(
            TableName=table_name(), Key={"pk": {"S": ark_pk(model_id)}, "sk": {"S": fine_sk(now)}},
            UpdateExpression="ADD #c :one SET expires_at_epoch = :until",
            ExpressionAttributeNames={"#c": counter},
            ExpressionAttributeValues={":one": {"N": "1"}, ":until": {"N": str(int(now) + FINE_KEEP_S)}})
    except (ClientError, BotoCoreError) as error:
        log.warning("Ark error of %s not counted: %s", model_id, error)


def sample_queue(model_id: str, queued: int, running: int, now: float) -> bool:
    """The 5-minute slot's sample of the model's queue, written by the slot's first sweep (True), kept by later
    ones (False)."""
    try:
        aws.client("dynamodb").put_item(
            TableName=table_name(),
            Item={"pk": {"S": queue_pk(model_id)}, "sk": {"S": fine_sk(now)}, "queued": {"N": str(queued)},
                  "running": {"N": str(running)}, "expires_at_epoch": {"N": str(int(now) + FINE_KEEP_S)}},
            ConditionExpression="attribute_not_exists(pk)")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == writes.CONDITION_FAILED:
            return False
        raise
    return True
