"""The metrics' roll-ups: each finished task counted once into its model's time buckets, off the request path and
never inside the task's own transition nor on its worker's way to the next task (docs/design.md, "Metrics").

* `mark` (a state machine write hook) rides on the terminal transition's own write: a sparse mark on the task
  (`metrics_shard`, `metrics_due`), no request more. Nothing else happens as a task ends.
* `apply_due` (the sweeper, once a minute) reads the marked tasks from the sparse `metrics_pending` index, a page at
  a time, and applies many of them per transaction: each task's mark removal, conditioned on the mark as read, and
  the contributions summed per item (the model's 5-minute and hour buckets, `fine#` and `hour#`, and the day's usage
  rows, `usage#`). The transaction is all or nothing, so a contribution is written exactly when its mark goes: a
  mark another run or a delete took meanwhile cancels it, and it runs again without that task; a crash leaves the
  marks for the next run. The figures lag the tasks by up to the sweeper's period.
* `apply` (a delete of a task still marked) counts that one task the same way before its record goes.
* A mark whose apply keeps failing (a malformed record) is set aside after `MAX_FAILURES` runs, logged and counted,
  so it never holds the others back.
* `count_ark_error`: one ADD per 429 / 5xx Ark answered (a retry's rare path), into the model's 5-minute bucket.
* `sample_queue`: the sweeper's sample of a model's queued / running, one per 5 minutes (the first sweep of a slot).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib import aws, resources
from chalicelib.clock import epoch_of
from chalicelib.metrics import histogram
from chalicelib.settings import get_settings
from chalicelib.store import statemachine, writes
from chalicelib.store.records import TaskRecord

log = logging.getLogger(__name__)

# Shards of a model's time bucket and of a day's usage rows: a batch writes the items of one shard (its first
# task's), so two runs at once rarely meet on an item (a meeting runs the transaction again); a read sums them all.
SHARDS = 4
# Shards of the `metrics_pending` index (each mark writes it twice: set, then removed); a run reads each.
MARK_SHARDS = 2
# Marks read per query page (and the most one transaction takes: each task's removal is one of its items).
PAGE = 100
# DynamoDB's limits of one TransactWriteItems: 100 items, 4 MB in all; and 4 KB per update expression, which the
# attributes one item's update may touch keep well inside (a placeholder pair is at most ~16 characters).
MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4_000_000
MAX_ITEM_ATTRIBUTES = 200
# A run stops reading pages after this long, inside the sweeper's 60 s Lambda timeout; the rest waits a minute.
RUN_BUDGET_S = 20.0
# Runs whose apply of a mark failed before the mark is set aside (`metrics_failed` records why).
MAX_FAILURES = 3
FINE_S, HOUR_S, DAY_S = 300, 3600, 86400
# What each item kind is kept for (the longest window it serves, and some): the 24 h window, `days` <= 31.
FINE_KEEP_S, HOUR_KEEP_S, USAGE_KEEP_S = 2 * DAY_S, 3 * DAY_S, 35 * DAY_S
# Error codes are Ark's or arkflow's (an operator's too): one that is not a short plain code counts as `other`, so a
# bucket's attributes stay few and small (DynamoDB's 400 KB item).
PLAIN_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Costs are summed per currency (`c:<ISO 4217 code>`): a model's price may change currency within a window, and two
# currencies never add up. Items written before kept one `cost` and its `currency` (read as such by `costs_of`).
COST_PREFIX = "c:"
CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")
# `outcomes` counts statuses and error codes under one name each: a code that names a status is never counted as it.
STATUSES = frozenset({statemachine.QUEUED, statemachine.RUNNING, *statemachine.TERMINAL})
# Errors that say the request itself is wrong (a malformed record's figures): the batch is split to find the task.
_INVALID = frozenset({"ValidationException", "ValidationError", "SerializationException"})
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


def mark(task: TaskRecord, target: str, moment: float) -> list[Any]:
    """The terminal transition's mark (a write hook): what the next roll-up run counts."""
    if target not in statemachine.TERMINAL:
        return []
    return [TaskRecord.metrics_shard.set(mark_shard_name(_shard(task.task_id, MARK_SHARDS))),
            TaskRecord.metrics_due.set(moment)]


# --- a task's contribution ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contribution:
    model_id: str
    finished: float
    status: str
    error_code: str | None
    wait_s: float | None  # accepted -> running (its last start)
    run_s: float | None  # running -> terminal
    cost: Decimal | None
    currency: str | None
    user_id: str
    username: str


def contribution_of(task: TaskRecord) -> Contribution:
    """What `task` adds to the figures. Raises ValueError (or TypeError) for a record no figure can be read from."""
    finished = epoch_of(task.finished_at) if task.finished_at else float(task.metrics_due or 0)
    started = epoch_of(task.started_at) if task.started_at else None
    created = epoch_of(task.created_at)
    if not all(isinstance(name, str) and name for name in (task.model_id, task.user_id)):
        raise ValueError("no model or user")
    if not all(math.isfinite(moment) for moment in (finished, created, started or 0.0)):
        raise ValueError("a time that is no number")
    code = task.error.code if task.error is not None and task.error.code else None
    return Contribution(
        model_id=task.model_id, finished=finished, status=task.status,
        error_code=_error_code(code, task.status),
        wait_s=None if started is None else max(0.0, started - created),
        run_s=None if started is None else max(0.0, finished - started),
        cost=_cost(task), currency=getattr(task, "currency", None),
        user_id=task.user_id, username=task.username or task.user_id)


def _cost(task: TaskRecord) -> Decimal | None:
    """The task's cost as summed: None without one, or without the currency it is in (it is added to no sum)."""
    cost = getattr(task, "cost", None)
    if cost is None:
        return None
    amount = Decimal(repr(float(cost)))
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"cost {cost!r}")
    currency = getattr(task, "currency", None)
    if not isinstance(currency, str) or not CURRENCY_CODE.match(currency):
        log.warning("cost of task %s is in no currency (%r): not summed", task.task_id, currency)
        return None
    return amount


def _error_code(code: str | None, status: str) -> str | None:
    """The error code a task counts under beside its status: none for one that repeats it (Ark's expiry ends a video
    `expired` with the code `expired`: one task, one outcome), `other` for one that names another status (an
    operator's) or is no plain short code."""
    if not code or code == status:
        return None
    return "other" if code in STATUSES or not PLAIN_CODE.match(code) else code


def costs_of(item: dict[str, Any]) -> dict[str, float]:
    """A roll-up item's cost sums by currency (one written before the per-currency sums: its `cost` in `currency`)."""
    costs = {name[len(COST_PREFIX):]: float(value["N"]) for name, value in item.items()
             if name.startswith(COST_PREFIX) and "N" in value}
    legacy, currency = item.get("cost", {}).get("N"), item.get("currency", {}).get("S")
    if legacy is not None and currency:
        costs[currency] = costs.get(currency, 0.0) + float(legacy)
    return costs


def shown_cost(costs: dict[str, float], preferred: str | None) -> tuple[float, str | None]:
    """A figure's `cost` and `currency` (its `costs` holds every sum): the sum of its only currency; with several,
    the one in `preferred` (the model's price's currency now), else the first by code; never two added up."""
    if len(costs) == 1:
        currency: str | None = next(iter(costs))
    elif preferred in costs or not costs:
        currency = preferred
    else:
        currency = min(costs)
    return round(costs.get(currency, 0.0) if currency else 0.0, 6), currency


# --- a batch: many tasks' contributions, summed per item, in one transaction ------------------------------------

Key = tuple[str, str]  # (pk, sk) of a roll-up item


@dataclass
class _Sums:
    """What a batch adds to one roll-up item (ADDs), and the attributes it sets."""

    adds: Counter[str] = field(default_factory=Counter)
    sets: dict[str, str | int] = field(default_factory=dict)

    def merge(self, other: _Sums) -> None:
        self.adds.update(other.adds)
        for name, value in other.sets.items():
            # The latest expiry of the batch's tasks (the others' is earlier), else the value as written.
            kept = self.sets.get(name)
            self.sets[name] = max(value, kept) if isinstance(value, int) and isinstance(kept, int) else value

    def names(self) -> set[str]:
        return set(self.adds) | set(self.sets)


def _bucket_sums(part: Contribution, keep_until: int) -> _Sums:
    sums = _Sums()
    sums.adds["n"] += 1
    sums.adds[f"s:{part.status}"] += 1
    if part.error_code:
        sums.adds[f"e:{part.error_code}"] += 1
    if part.wait_s is not None:
        sums.adds[f"w{histogram.bucket_of(part.wait_s)}"] += 1
    if part.run_s is not None:
        sums.adds[f"r{histogram.bucket_of(part.run_s)}"] += 1
    if part.cost is not None and part.currency:
        sums.adds[COST_PREFIX + part.currency] += part.cost
    sums.sets["expires_at_epoch"] = keep_until
    return sums


def _usage_sums(part: Contribution, day: str) -> _Sums:
    sums = _Sums()
    sums.adds["requests"] += 1
    if part.status in (statemachine.SUCCEEDED, statemachine.FAILED):
        sums.adds[part.status] += 1
    if part.cost is not None and part.currency:
        sums.adds[COST_PREFIX + part.currency] += part.cost
    sums.sets.update(day=day, model_id=part.model_id, user_id=part.user_id, username=part.username,
                     expires_at_epoch=int(part.finished // DAY_S * DAY_S) + DAY_S + USAGE_KEEP_S)
    return sums


def _touched(part: Contribution, shard: int) -> list[tuple[Key, _Sums]]:
    """The roll-up items one contribution adds to (in `shard`), with what it adds."""
    fine_start, hour_start = part.finished // FINE_S * FINE_S, part.finished // HOUR_S * HOUR_S
    day = day_of(part.finished, get_settings().quota_timezone)
    return [
        ((rollup_pk("fine", part.model_id, shard), fine_sk(part.finished)),
         _bucket_sums(part, int(fine_start) + FINE_S + FINE_KEEP_S)),
        ((rollup_pk("hour", part.model_id, shard), hour_sk(part.finished)),
         _bucket_sums(part, int(hour_start) + HOUR_S + HOUR_KEEP_S)),
        ((usage_pk(day, shard), f"{part.model_id}#{part.user_id}"), _usage_sums(part, day)),
    ]


class _Batch:
    """Tasks counted by one transaction: each one's mark removal, then the sums of their contributions per item."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.tasks: list[tuple[TaskRecord, Contribution]] = []
        self.sums: dict[Key, _Sums] = {}

    def add(self, task: TaskRecord, part: Contribution) -> bool:
        """Take `task` in, unless the transaction would outgrow DynamoDB's limits (False: it is left out)."""
        touched = _touched(part, self.shard)
        new_items = sum(1 for key, _ in touched if key not in self.sums)
        if len(self.tasks) + 1 + len(self.sums) + new_items > MAX_TRANSACTION_ITEMS:
            return False
        for key, sums in touched:
            held = self.sums.get(key)
            if len(sums.names() | (held.names() if held else set())) > MAX_ITEM_ATTRIBUTES:
                return False
        for key, sums in touched:
            self.sums.setdefault(key, _Sums()).merge(sums)
        self.tasks.append((task, part))
        return True

    def part(self, indexes: Iterable[int]) -> _Batch:
        """The batch of only the tasks at `indexes` (the others' contributions taken out)."""
        smaller = _Batch(self.shard)
        for index in indexes:
            smaller.add(*self.tasks[index])
        return smaller

    def items(self) -> list[dict[str, Any]]:
        # The tasks' removals first: a cancellation's reasons are in the items' order, so index i is task i.
        return [*(_take_mark(task) for task, _ in self.tasks),
                *(_update_item(key, sums) for key, sums in self.sums.items())]


def _take_mark(task: TaskRecord) -> dict[str, Any]:
    """The task's mark removal, only while its mark is the one read (else another run or a delete counted it)."""
    return {"Update": {"TableName": TaskRecord.Meta.table_name, "Key": {"task_id": {"S": task.task_id}},
                       "UpdateExpression": "REMOVE metrics_shard, metrics_due, metrics_failures",
                       **_mark_condition(task)}}


def _mark_condition(task: TaskRecord) -> dict[str, Any]:
    return {"ConditionExpression": "metrics_due = :due",
            "ExpressionAttributeValues": {":due": {"N": _number(task.metrics_due)}}}


def _update_item(key: Key, sums: _Sums) -> dict[str, Any]:
    names: dict[str, str] = {}
    values: dict[str, Any] = {}

    def placeholders(name: str, value: dict[str, str]) -> tuple[str, str]:
        names[f"#a{len(names)}"] = name
        values[f":v{len(values)}"] = value
        return f"#a{len(names) - 1}", f":v{len(values) - 1}"

    # Plain notation: a Decimal's own may be scientific ("1E-7"), which no sum needs.
    adds = ["{} {}".format(*placeholders(name, {"N": format(amount, "f") if isinstance(amount, Decimal)
                                                  else str(amount)}))
            for name, amount in sorted(sums.adds.items())]
    sets = ["{} = {}".format(*placeholders(name, {"N": str(value)} if isinstance(value, int) else {"S": value}))
            for name, value in sorted(sums.sets.items())]
    expression = " ".join(part for part in ("ADD " + ", ".join(adds) if adds else "",
                                            "SET " + ", ".join(sets) if sets else "") if part)
    return {"Update": {"TableName": table_name(), "Key": {"pk": {"S": key[0]}, "sk": {"S": key[1]}},
                       "UpdateExpression": expression, "ExpressionAttributeNames": names,
                       "ExpressionAttributeValues": values}}


def _number(value: Any) -> str:
    """A stored number as DynamoDB wrote it (pynamodb reads numbers as floats: 1764626400.5 -> '1764626400.5')."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _transact(items: list[dict[str, Any]]) -> None:
    aws.client("dynamodb").transact_write_items(TransactItems=items)


# --- applying marks ---------------------------------------------------------------------------------------------


@dataclass
class RollupReport:
    applied: int = 0  # tasks counted by this run
    gone: int = 0  # marks another run or a delete took first (counted there)
    failed: int = 0  # marks whose apply failed in this run (left for the next, or set aside)
    set_aside: int = 0  # marks taken off uncounted after `MAX_FAILURES` failed runs
    transactions: int = 0


def apply_tasks(tasks: Iterable[TaskRecord], report: RollupReport, *, strict: bool = False) -> None:
    """Count `tasks` (as read, marked), as many per transaction as DynamoDB's limits allow. A batch that cannot be
    written for now (throttling, conflicts past the retries) is logged and left for the next run, or raised when
    `strict` (a delete, which must not go on without its count)."""
    batch: _Batch | None = None
    for task in tasks:
        if task.metrics_due is None or task.status not in statemachine.TERMINAL:
            continue
        try:
            part = contribution_of(task)
        except (ValueError, TypeError, AttributeError, ArithmeticError) as error:
            _failed(task, f"unreadable record: {error}", report)
            continue
        if batch is not None and batch.add(task, part):
            continue
        if batch is not None:
            _commit_or_leave(batch, report, strict)
        batch = _Batch(_shard(task.task_id, SHARDS))
        batch.add(task, part)  # one task alone touches 4 items and a few attributes: it always fits
    if batch is not None:
        _commit_or_leave(batch, report, strict)


def _commit_or_leave(batch: _Batch, report: RollupReport, strict: bool) -> None:
    try:
        _commit(batch, report)
    except (ClientError, BotoCoreError) as error:
        if strict:
            raise
        report.failed += len(batch.tasks)
        log.warning("metrics of %d tasks left for the next run: %s", len(batch.tasks), error)


def _commit(batch: _Batch, report: RollupReport) -> None:
    """Write `batch`; a task whose mark went meanwhile is dropped and the rest written again (the transaction wrote
    nothing), and a batch DynamoDB refuses as invalid is split until the task it cannot take is found."""
    attempt = 0
    while batch.tasks:
        items = batch.items()
        if len(batch.tasks) > 1 and len(json.dumps(items)) > MAX_TRANSACTION_BYTES:
            _split(batch, report, "over DynamoDB's transaction size")
            return
        try:
            report.transactions += 1
            _transact(items)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            reasons = [reason.get("Code") or "None" for reason in error.response.get("CancellationReasons", [])]
            gone = [index for index, reason in enumerate(reasons[:len(batch.tasks)])
                    if reason == "ConditionalCheckFailed"]
            if code == "TransactionCanceledException" and gone:
                report.gone += len(gone)
                for index in gone:
                    task = batch.tasks[index][0]
                    task.metrics_shard = task.metrics_due = None
                batch = batch.part(index for index in range(len(batch.tasks)) if index not in gone)
                continue
            if code in _INVALID or set(reasons) & _INVALID:
                _split(batch, report, str(error))
                return
            if code == "TransactionCanceledException" and writes.only_conflicts(reasons) and \
                    attempt < writes.TRANSACTION_ATTEMPTS - 1:
                writes.pause_before_retry(attempt)
                attempt += 1
                continue
            raise
        report.applied += len(batch.tasks)
        for task, _ in batch.tasks:
            task.metrics_shard = task.metrics_due = None
        return


def _split(batch: _Batch, report: RollupReport, reason: str) -> None:
    if len(batch.tasks) == 1:
        _failed(batch.tasks[0][0], reason, report)
        return
    middle = len(batch.tasks) // 2
    for half in (range(middle), range(middle, len(batch.tasks))):
        _commit(batch.part(half), report)


def _failed(task: TaskRecord, reason: str, report: RollupReport) -> None:
    """A mark that could not be applied: one failure more on it (while it is still the mark read), and set aside
    with the reason once it failed `MAX_FAILURES` runs, so it is looked at no more (and never blocks a page)."""
    report.failed += 1
    log.error("metrics of task %s not applied: %s", task.task_id, reason)
    client = aws.client("dynamodb")
    key = {"task_id": {"S": task.task_id}}
    condition = _mark_condition(task)
    try:
        answer = client.update_item(
            TableName=TaskRecord.Meta.table_name, Key=key, UpdateExpression="ADD metrics_failures :one",
            ConditionExpression=condition["ConditionExpression"], ReturnValues="UPDATED_NEW",
            ExpressionAttributeValues={**condition["ExpressionAttributeValues"], ":one": {"N": "1"}})
        if int(answer["Attributes"]["metrics_failures"]["N"]) < MAX_FAILURES:
            return
        client.update_item(
            TableName=TaskRecord.Meta.table_name, Key=key,
            UpdateExpression="REMOVE metrics_shard, metrics_due SET metrics_failed = :why",
            ConditionExpression=condition["ConditionExpression"],
            ExpressionAttributeValues={**condition["ExpressionAttributeValues"], ":why": {"S": reason[:500]}})
    except (ClientError, BotoCoreError) as error:
        log.warning("failure of task %s's metrics not recorded: %s", task.task_id, error)
        return
    task.metrics_shard = task.metrics_due = None
    report.set_aside += 1
    log.error("metrics of task %s set aside uncounted after %d failed runs", task.task_id, MAX_FAILURES)


def apply(task: TaskRecord) -> bool:
    """Count `task` (as read, marked) now, as a delete does before the record goes: True when this call counted it,
    False when its mark was gone (counted already) or set aside. Raises what DynamoDB raised otherwise."""
    report = RollupReport()
    apply_tasks([task], report, strict=True)
    return report.applied == 1


def marked(deadline: float | None = None, clock: Callable[[], float] = time.monotonic) -> Iterator[TaskRecord]:
    """The marked tasks, oldest first per index shard, read a page (one query) at a time; none more once `deadline`
    (of `clock`) has passed."""
    for shard in map(mark_shard_name, range(MARK_SHARDS)):
        for task in TaskRecord.metrics_pending.query(shard, page_size=PAGE):
            if deadline is not None and clock() > deadline:
                log.warning("metrics run out of time: the rest waits for the next run")
                return
            yield task


def apply_due(budget_s: float = RUN_BUDGET_S, clock: Callable[[], float] = time.monotonic) -> RollupReport:
    """A roll-up run (the sweeper's): every marked task counted, many per transaction (a batch may take tasks of
    two pages), until none is left or `budget_s` is spent (the rest waits for the next run). Never raises."""
    report = RollupReport()
    try:
        apply_tasks(marked(clock() + budget_s, clock), report)
    except (ClientError, BotoCoreError, PynamoDBException) as error:
        log.warning("metrics marks left for the next run: %s", error)
    return report


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
