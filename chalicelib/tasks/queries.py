"""Reading tasks: one by id (a user's own, or any for admins), a model's queue position, and listings newest
first, filtered and paged with opaque cursors, bounded in what they read and in the size of what they answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition

from chalicelib.accounts.auth import Principal
from chalicelib.api.cursors import decode_cursor, encode_cursor
from chalicelib.ids import TASK_ID_PATTERN
from chalicelib.resources import TASK_LIST_SHARDS
from chalicelib.schemas import TaskListQuery
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.tasks.errors import task_not_found

# A listing page's bodies stop before this many bytes of Lambda's response (see `response_bytes`): Lambda answers
# at most 6 MB, and the rest of the response (envelope, cursor, headers) needs far less than the 2 MB left.
PAGE_BYTE_BUDGET = 4 * 1024 * 1024
# Items a listing may read per request, matched or not, so a filter that matches nothing still answers in time.
PAGE_READ_BUDGET = 1000
# Items one listing query reads at most (DynamoDB also stops a page at 1 MB).
LISTING_QUERY_PAGE = 100
assert PAGE_READ_BUDGET > TASK_LIST_SHARDS * LISTING_QUERY_PAGE, "every shard is read once before the budget ends"

# `created_key`: the creation time (`clock.iso`) and the task id, which makes it unique.
_CREATED_KEY = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z#" + TASK_ID_PATTERN.strip("^$"))


# Queued tasks a queue position reads at the front of its model's queue, at most (one request).
QUEUE_HEAD_LOOKAHEAD = 5


class TaskQueries:
    """Reads of the tasks table; no write."""

    def get_own(self, principal: Principal, task_id: str) -> TaskRecord:
        task = self.get(task_id)
        if task.user_id != principal.user_id:
            raise task_not_found(task_id)  # never reveal that another user's task exists
        return task

    def get(self, task_id: str) -> TaskRecord:
        try:
            return TaskRecord.get(task_id, consistent_read=True)
        except DoesNotExist as exc:
            raise task_not_found(task_id) from exc

    def queue_position(self, task: TaskRecord) -> int | None:
        """1 for the oldest queued task of its model. From the task numbers intake hands out: its distance from
        the oldest one still queued (one item read, whatever the queue's depth). Tasks between the two that left
        early (cancelled, or started past a user at the cap) and refused requests count until that oldest task
        starts. A task from before the numbers counts the queue ahead of it."""
        if task.status != statemachine.QUEUED or not task.queued_model:
            return None
        # A task queued again after Ark's retryable error keeps its place at the front: the head is the oldest
        # that never started.
        head = TaskRecord.queued_by_model.query(task.queued_model, limit=QUEUE_HEAD_LOOKAHEAD)
        oldest = next((queued for queued in head if queued.started_at is None), None)
        if task.queue_seq is not None and oldest is not None and oldest.queue_seq is not None:
            ahead_of_oldest = 0 if task.started_at is not None else int(task.queue_seq) - int(oldest.queue_seq)
            return max(1, ahead_of_oldest + 1)
        ahead = TaskRecord.queued_by_model.count(task.queued_model, TaskRecord.created_key < task.created_key)
        return ahead + 1

    def list(
        self, query: TaskListQuery, owner: str | None, present: Callable[[TaskRecord], dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page, newest first, of `owner`'s tasks (a user id; None: everyone's, for admins), as `present`
        shows them, and the cursor of the next page (None: no more).

        A page ends at `query.limit` tasks, before its bodies reach `PAGE_BYTE_BUDGET` (Lambda answers at most
        6 MB), or once `PAGE_READ_BUDGET` items were read: a filter that matches little still answers in time,
        with fewer tasks (even none) and a cursor to go on from.
        """
        before = decode_cursor(query.cursor, _CREATED_KEY) if query.cursor else None
        filters = _filter_condition(query)
        page_size = LISTING_QUERY_PAGE if filters is not None else min(query.limit + 1, LISTING_QUERY_PAGE)
        if owner is not None:
            shards = [_ShardReader(TaskRecord.by_user, owner, before)]
        else:
            shards = [_ShardReader(TaskRecord.by_list_shard, f"shard-{shard}", before)
                      for shard in range(TASK_LIST_SHARDS)]
        found: list[TaskRecord] = []  # matches read but not on the page yet
        page: list[dict[str, Any]] = []
        page_bytes = items_read = 0
        last_key = ""
        while True:
            settled = _settled_bound(shards)
            # Every match at or newer than `settled` has been read, in every shard: those go out in order.
            ready = sorted((task for task in found if settled is not None and task.created_key >= settled),
                           key=lambda task: task.created_key, reverse=True)
            for task in ready:
                if len(page) == query.limit:
                    return page, encode_cursor(last_key)
                body = present(task)
                size = response_bytes(body)
                if page and page_bytes + size > PAGE_BYTE_BUDGET:
                    return page, encode_cursor(last_key)
                page.append(body)
                page_bytes += size
                last_key = task.created_key
                found.remove(task)
            if settled == "":
                return page, None  # every shard read to its end
            if len(page) == query.limit:
                return page, encode_cursor(last_key)
            if settled is not None and items_read >= PAGE_READ_BUDGET:
                return page, encode_cursor(settled)
            # Read on in the shard that holds the settled bound back (one never read first).
            reader = max((shard for shard in shards if not shard.exhausted),
                         key=lambda shard: (shard.below is None, shard.below or ""))
            items_read += reader.read_page(filters, page_size, found)


@dataclass
class _ShardReader:
    """One index partition of a listing, read newest first one query page at a time."""

    index: Any
    hash_key: str
    # The next page holds items older than this (None: from the newest); everything newer has been read.
    below: str | None
    exhausted: bool = False

    def read_page(self, filters: Condition | None, page_size: int, matches: list[TaskRecord]) -> int:
        """Read one page into `matches` (what passes `filters`); how many items DynamoDB read for it."""
        results = self.index.query(
            self.hash_key,
            range_key_condition=(TaskRecord.created_key < self.below) if self.below else None,
            filter_condition=filters,
            scan_index_forward=False,
            page_size=page_size,
        )
        page = next(results.page_iter)
        matches.extend(TaskRecord.from_raw_data(item) for item in page.get("Items", []))
        last_read = page.get("LastEvaluatedKey")
        if last_read is None:
            self.exhausted = True
        else:
            self.below = last_read["created_key"]["S"]
        return int(page.get("ScannedCount", 0))


def _settled_bound(shards: list[_ShardReader]) -> str | None:
    """The created_key down to which every shard has been read: None while one has not been read at all
    (without a cursor), "" once all have been read to their end."""
    unfinished = [shard for shard in shards if not shard.exhausted]
    if not unfinished:
        return ""
    if any(shard.below is None for shard in unfinished):
        return None
    return max(str(shard.below) for shard in unfinished)


def response_bytes(body: Any) -> int:
    """What `body` adds to a Lambda proxy response: its JSON as Chalice writes it (ASCII only), written again as
    the string value of the response's `body` (so each quote and backslash counts twice), and a separator."""
    return len(json.dumps(json.dumps(body, separators=(",", ":")))) - 1


def _filter_condition(query: TaskListQuery) -> Condition | None:
    condition: Condition | None = None
    for attribute, value in (
        (TaskRecord.status, query.status),
        (TaskRecord.type, query.type),
        (TaskRecord.model_id, query.model_id),
    ):
        if value is not None:
            clause = attribute == value
            condition = clause if condition is None else condition & clause
    return condition


