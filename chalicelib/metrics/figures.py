"""Reading the roll-ups back: the admin's metrics and usage, a model's queue depth, and the recent figures a task
body's `eta_s` and `progress` come from (docs/api.md, "Metrics"). Every read is a query of a few small items per
model (its shards' buckets in the window) or a cached one per container and minute; never a scan.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws, catalog, resources
from chalicelib.api.cursors import decode_cursor, encode_cursor
from chalicelib.clock import epoch_of, iso
from chalicelib.ids import MODEL_ID_PATTERN
from chalicelib.lanes.circuit import circuit_of
from chalicelib.metrics import histogram, rollup
from chalicelib.metrics.rollup import FINE_S, HOUR_S, SHARDS
from chalicelib.schemas import USAGE_PAGE, USAGE_PAGE_MAX
from chalicelib.settings import get_settings
from chalicelib.store import slots, statemachine
from chalicelib.store.records import ModelRecord, TaskRecord

log = logging.getLogger(__name__)

WINDOWS: dict[str, int] = {"1h": HOUR_S, "24h": 24 * HOUR_S}
# Queued tasks read at the head of a model's queue: a queue no longer than this is counted exactly.
QUEUE_HEAD = 5
# A running video's progress stays below 1 until it ends.
PROGRESS_CAP = 0.99
# How long a container keeps a model's recent figures (as `catalog.recent_model`).
RECENT_S = 60.0
# A usage cursor: the last row's day and its key (model id, then user id) in the day's partitions.
_USAGE_KEY = re.compile(r"\d{4}-\d{2}-\d{2}#" + MODEL_ID_PATTERN.strip("^$") + r"#[!-~]{1,128}")


@dataclass
class Totals:
    """What a set of roll-up items adds up to."""

    finished: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    wait: dict[int, int] = field(default_factory=dict)
    run: dict[int, int] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)  # by currency: two are never added up

    def add(self, item: dict[str, Any]) -> None:
        for currency, amount in rollup.costs_of(item).items():
            self.costs[currency] = self.costs.get(currency, 0.0) + amount
        for name, value in item.items():
            if "N" not in value:
                continue
            number = float(value["N"])
            if name == "n":
                self.finished += int(number)
            elif name.startswith(("s:", "e:")):
                self.outcomes[name[2:]] = self.outcomes.get(name[2:], 0) + int(number)
            elif name[:1] in "wr" and name[1:].isdigit():
                counts = self.wait if name[0] == "w" else self.run
                counts[int(name[1:])] = counts.get(int(name[1:]), 0) + int(number)

    def quantiles(self, counts: dict[int, int]) -> dict[str, float | None]:
        return {"p50": histogram.quantile(counts, 0.5), "p95": histogram.quantile(counts, 0.95)}


def _query(pk: str, first_sk: str | None = None, last_sk: str | None = None) -> Iterable[dict[str, Any]]:
    """Every item of `pk` (between the two buckets, when given), page by page."""
    for items, _ in _pages(pk, between=(first_sk, last_sk) if first_sk is not None and last_sk is not None else None):
        yield from items


def _pages(pk: str, *, between: tuple[str, str] | None = None, after: str | None = None,
           wanted: int | None = None) -> Iterator[tuple[list[dict[str, Any]], bool]]:
    """The pages of `pk`'s items (sort keys `between` two, or past `after`), each with whether the partition may
    hold more; at most `wanted` items in all when given (each page asks for what is still wanted)."""
    arguments: dict[str, Any] = {"TableName": rollup.table_name(), "KeyConditionExpression": "pk = :pk",
                                 "ExpressionAttributeValues": {":pk": {"S": pk}}}
    if between is not None:
        arguments["KeyConditionExpression"] += " AND sk BETWEEN :first AND :last"
        arguments["ExpressionAttributeValues"].update({":first": {"S": between[0]}, ":last": {"S": between[1]}})
    if after is not None:
        arguments["KeyConditionExpression"] += " AND sk > :after"
        arguments["ExpressionAttributeValues"][":after"] = {"S": after}
    client = aws.client("dynamodb")
    seen = 0
    while True:
        page = client.query(**arguments, **({"Limit": wanted - seen} if wanted is not None else {}))
        items = page.get("Items", [])
        seen += len(items)
        yield items, "LastEvaluatedKey" in page
        if "LastEvaluatedKey" not in page:
            return
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def window_bounds(window: str, now: float) -> tuple[str, str, str]:
    """The bucket kind a window reads and its first and last bucket: the last hour is the 12 five-minute buckets
    ending with the current one, the last day the 24 hour buckets ending with the current one."""
    if window == "1h":
        return "fine", rollup.fine_sk(now - HOUR_S + FINE_S), rollup.fine_sk(now)
    return "hour", rollup.hour_sk(now - 24 * HOUR_S + HOUR_S), rollup.hour_sk(now)


def totals(model_id: str, window: str, now: float) -> Totals:
    kind, first, last = window_bounds(window, now)
    found = Totals()
    for shard in range(SHARDS):
        for item in _query(rollup.rollup_pk(kind, model_id, shard), first, last):
            found.add(item)
    return found


def ark_errors(model_id: str, window: str, now: float) -> dict[str, int]:
    counts = {"ark_429": 0, "ark_5xx": 0}
    for item in _query(rollup.ark_pk(model_id), rollup.fine_sk(now - WINDOWS[window] + FINE_S), rollup.fine_sk(now)):
        for name in counts:
            counts[name] += int(item.get(name, {}).get("N", "0"))
    return counts


def series(model_id: str, window: str, now: float) -> dict[str, list[Any]]:
    """One sample per 5 minutes over the window, oldest first (null where no sweep sampled the slot)."""
    slots_in_window = WINDOWS[window] // FINE_S
    first = now - (slots_in_window - 1) * FINE_S
    sampled = {item["sk"]["S"]: item for item in _query(rollup.queue_pk(model_id), rollup.fine_sk(first),
                                                          rollup.fine_sk(now))}
    answer: dict[str, list[Any]] = {"at": [], "queued": [], "running": []}
    for index in range(slots_in_window):
        start = (first + index * FINE_S) // FINE_S * FINE_S
        sample = sampled.get(rollup.fine_sk(start))
        answer["at"].append(iso(start))
        for name in ("queued", "running"):
            answer[name].append(int(sample[name]["N"]) if sample else None)
    return answer


def queued_now(model_id: str) -> int:
    """The model's queued tasks: exact up to `QUEUE_HEAD`; beyond, the span of queue numbers from the oldest queued
    to the newest (a task that left from the middle counts until the head moves past it). Two small queries."""
    head = list(TaskRecord.queued_by_model.query(model_id, limit=QUEUE_HEAD))
    if len(head) < QUEUE_HEAD:
        return len(head)
    newest = next(iter(TaskRecord.queued_by_model.query(model_id, scan_index_forward=False, limit=1)), None)
    numbers = [int(task.queue_seq) for task in head if task.queue_seq is not None]
    if newest is None or newest.queue_seq is None or not numbers:
        return len(head)
    return max(len(head), int(newest.queue_seq) - min(numbers) + 1)


def model_metrics(model: ModelRecord, window: str, now: float) -> dict[str, Any]:
    state = slots.state(model.model_id)
    found = totals(model.model_id, window, now)
    return {
        "model_id": model.model_id,
        "queued": queued_now(model.model_id),
        "running": state.count,
        "concurrency": int(model.concurrency),
        "wait_s": found.quantiles(found.wait),
        "run_s": found.quantiles(found.run),
        "outcomes": found.outcomes,
        **ark_errors(model.model_id, window, now),
        **_cost_fields(found.costs, _price_currency(model)),
        "circuit": circuit_of(model),
        "series": series(model.model_id, window, now),
    }


def _price_currency(model: ModelRecord | None) -> str | None:
    price = getattr(model, "price", None)
    return price.get("currency") if isinstance(price, dict) else None


def _cost_fields(costs: dict[str, float], price_currency: str | None) -> dict[str, Any]:
    """`cost` and `currency` (one currency's sum: `rollup.shown_cost`), and `costs`, every currency's sum."""
    cost, currency = rollup.shown_cost(costs, price_currency)
    return {"cost": cost, "currency": currency,
            "costs": {code: round(amount, 6) for code, amount in sorted(costs.items())}}


def metrics(window: str, now: float) -> dict[str, Any]:
    return {"window": window, "models": [model_metrics(model, window, now) for model in catalog.list_models()]}


def usage(days: int, now: float, zone: str, cursor: str | None = None, limit: int = USAGE_PAGE) -> dict[str, Any]:
    """Per day (the last `days` in `zone`, today included, newest first), model and user: what finished; one page
    of at most `limit` rows (`USAGE_PAGE_MAX` at most: a bounded answer under Lambda's 6 MB), and the cursor of the
    next (null: no more). A day's rows come in key order (model, then user), so a cursor is the last row's day and
    key."""
    today = datetime.fromtimestamp(now, ZoneInfo(zone)).date()
    limit = max(1, min(limit, USAGE_PAGE_MAX))
    after_day = after_key = None
    if cursor:
        after_day, after_key = decode_cursor(cursor, _USAGE_KEY).split("#", 1)
    rows: list[dict[str, Any]] = []
    for back in range(days):
        day = (today - timedelta(days=back)).isoformat()
        if after_day is not None and day > after_day:
            continue  # read on the pages before
        day_rows, last_key, day_has_more = _usage_of_day(day, after_key if day == after_day else None,
                                                         limit - len(rows))
        rows += day_rows
        if len(rows) == limit:
            more = day_has_more or back < days - 1
            return {"timezone": zone, "rows": rows, "next_cursor": encode_cursor(f"{day}#{last_key}") if more else None}
    return {"timezone": zone, "rows": rows, "next_cursor": None}


def _usage_of_day(day: str, after: str | None, wanted: int) -> tuple[list[dict[str, Any]], str | None, bool]:
    """The first `wanted` rows of `day` after the key `after`, merged over the shards, the last one's key, and
    whether more may follow.
    Reading `wanted` items of each shard is enough: a row among the first `wanted` keys has fewer than `wanted`
    smaller keys, in every shard."""
    merged: dict[str, dict[str, Any]] = {}
    more = False
    for shard in range(SHARDS):
        items, truncated = _first_items(rollup.usage_pk(day, shard), after, wanted)
        more = more or truncated
        for item in items:
            key = item["sk"]["S"]
            row = merged.setdefault(key, {"day": day, "model_id": item["model_id"]["S"],
                                          "username": item["username"]["S"], "requests": 0, "succeeded": 0,
                                          "failed": 0, "costs": {}})
            for name in ("requests", "succeeded", "failed"):
                row[name] += int(item.get(name, {}).get("N", "0"))
            for currency, amount in rollup.costs_of(item).items():
                row["costs"][currency] = row["costs"].get(currency, 0.0) + amount
    keys = sorted(merged)[:wanted]  # DynamoDB's order of sort keys: by code point, as Python's
    for key in keys:
        # The model's price names the currency shown only where a row has sums in two.
        model = catalog.recent_model(merged[key]["model_id"]) if len(merged[key]["costs"]) > 1 else None
        merged[key].update(_cost_fields(merged[key]["costs"], _price_currency(model)))
    return [merged[key] for key in keys], keys[-1] if keys else None, more or len(merged) > wanted


def _first_items(pk: str, after: str | None, wanted: int) -> tuple[list[dict[str, Any]], bool]:
    """The first `wanted` items of `pk` with a sort key past `after`, and whether the partition may hold more."""
    items: list[dict[str, Any]] = []
    for page, more in _pages(pk, after=after, wanted=wanted):
        items += page
        if not more:
            return items, False
        if len(items) >= wanted:
            return items, True
    return items, False


def sample_queues(models: Iterable[ModelRecord], now: float) -> int:
    """The sweeper's 5-minute samples of every model's queued and running (once per slot and container)."""
    sampled = 0
    slot = rollup.fine_sk(now)
    for model in models:
        if _last_sampled.get(model.model_id) == slot:
            continue
        sampled += rollup.sample_queue(model.model_id, queued_now(model.model_id), slots.state(model.model_id).count,
                                       now)
        _last_sampled[model.model_id] = slot
    return sampled


_last_sampled: dict[str, str] = {}


# --- the recent figures of task bodies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Recent:
    """A model's recent wait and run medians (the current and the previous hour buckets) and its concurrency."""

    wait_p50: float | None
    run_p50: float | None
    concurrency: int | None


_recent: dict[str, tuple[float, Recent]] = {}


def recent(model_id: str, now: float) -> Recent:
    """As read here within the last minute, else read again: one BatchGetItem of the model's last two hour buckets
    (every shard) and its slot record (the concurrency)."""
    cached = _recent.get(model_id)
    clock = time.monotonic()
    if cached is not None and clock - cached[0] < RECENT_S:
        return cached[1]
    hours = {rollup.hour_sk(now), rollup.hour_sk(now - HOUR_S)}
    keys = [{"pk": {"S": rollup.rollup_pk("hour", model_id, shard)}, "sk": {"S": hour}}
            for shard in range(SHARDS) for hour in sorted(hours)]
    slot_table = resources.SLOTS.physical_name(get_settings().resource_prefix)
    request: dict[str, Any] = {rollup.table_name(): {"Keys": keys},
                               slot_table: {"Keys": [{"model_id": {"S": model_id}}],
                                            "ProjectionExpression": "#l", "ExpressionAttributeNames": {"#l": "limit"}}}
    found = Totals()
    limit: int | None = None
    client = aws.client("dynamodb")
    for _ in range(3):  # unprocessed keys (throttling) are asked again, a little
        answer = client.batch_get_item(RequestItems=request)
        for item in answer.get("Responses", {}).get(rollup.table_name(), []):
            found.add(item)
        for item in answer.get("Responses", {}).get(slot_table, []):
            limit = int(item["limit"]["N"]) if "limit" in item else None
        request = answer.get("UnprocessedKeys") or {}
        if not request:
            break
    figures = Recent(histogram.quantile(found.wait, 0.5), histogram.quantile(found.run, 0.5), limit)
    _recent[model_id] = (clock, figures)
    return figures


def forget_recent() -> None:
    _recent.clear()
    _last_sampled.clear()


def estimates(task: TaskRecord, queue_position: int | None, now: float) -> dict[str, Any]:
    """`eta_s` of a queued task (seconds until it should be finished: the slots' turns ahead of it, then its own
    run, from the model's recent medians) and `progress` of a running video (elapsed against the recent run
    median, below 1 until it ends). Nothing for other tasks, when the model has no recent figures, or when they
    cannot be read (a body is never refused for an estimate)."""
    try:
        return _estimates(task, queue_position, now)
    except (ClientError, BotoCoreError) as error:
        log.warning("no estimate for task %s: %s", task.task_id, error)
        return {}


def _estimates(task: TaskRecord, queue_position: int | None, now: float) -> dict[str, Any]:
    if task.status == statemachine.QUEUED and queue_position is not None:
        figures = recent(task.model_id, now)
        if figures.run_p50 is not None:
            # Its turn comes half a run into the last round ahead of it (slots free at random), then it runs.
            turns = math.ceil(queue_position / max(1, figures.concurrency or 1))
            return {"eta_s": round((turns + 0.5) * figures.run_p50)}
        if figures.wait_p50 is not None:
            return {"eta_s": round(max(0.0, figures.wait_p50 - (now - epoch_of(task.created_at))))}
        return {}
    if task.status == statemachine.RUNNING and task.type == "video" and task.started_at:
        figures = recent(task.model_id, now)
        if figures.run_p50:
            elapsed = max(0.0, now - epoch_of(task.started_at))
            return {"progress": round(min(PROGRESS_CAP, elapsed / figures.run_p50), 3)}
    return {}
