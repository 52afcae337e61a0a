"""The webhook outbox: the mark a task carries from a transition its webhook subscribes to until that event's first
message is on the webhook queue, so a send that failed, or a Lambda that died between the write and the send, leaves
the event to the sweeper instead of losing it (docs/design.md, "Leases and deadlines").

* `mark` is written in the transition's own write (a state machine write hook, `events.due_mark`): no request more,
  and nothing for a task without a webhook. A transition that finds a mark keeps it as it is (`if_not_exists`), so
  one mark covers the events of both, and the index finds the task at the older one's time.
* `clear` removes it once the event is queued: only when the transition being told set it and nothing was written
  since (the version both conditions name), in one conditional UpdateItem. So an earlier transition's clear never
  removes the mark of a later one (a task can go `running -> succeeded` within milliseconds), nor a later one's clear
  the mark of an earlier event whose send failed; a mark so kept goes to the sweeper.
* `due` reads the sparse `webhooks_due` index for marks set more than `GRACE_S` ago, a page per sweep.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

from pynamodb.expressions.update import Action

from chalicelib.store import statemachine
from chalicelib.store.errors import StaleTask, WriteFailed
from chalicelib.store.marks import marked_before
from chalicelib.store.records import TaskRecord

log = logging.getLogger(__name__)

# Spreads the index's writes (a subscribed transition writes it twice: the mark, then its removal); the sweeper
# queries each shard once a minute, so keep it small.
SHARDS = 2
# How old a mark is before the sweeper sends its events again: a listener queues its event within milliseconds of
# the write, so a mark this old is a send that failed or a Lambda that died.
GRACE_S = 60
# Marked tasks the sweeper takes per sweep (each costs a send per event and one write); the rest wait a sweep.
PAGE = 100


def shard_name(shard: int) -> str:
    return f"webhooks-{shard}"


def shard_of(task_id: str) -> str:
    return shard_name(int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % SHARDS)


def mark(task: TaskRecord, moment: float) -> list[Action]:
    """The mark's actions for a transition of `task` (as read) written at `moment`: set, or kept if one is there."""
    return [TaskRecord.webhook_shard.set(shard_of(task.task_id)),
            TaskRecord.webhook_due.set(TaskRecord.webhook_due | moment),
            # The transition's write takes the version after the one it read (its condition).
            TaskRecord.webhook_due_by.set(TaskRecord.webhook_due_by | int(task.version) + 1)]


def set_by_this_write(task: TaskRecord) -> bool:
    """Whether the task's mark, as written, is the one its last write set (no mark kept from an earlier one)."""
    return task.webhook_due_by is not None and int(task.webhook_due_by) == int(task.version)


def clear(task: TaskRecord) -> bool:
    """Remove the mark as `task` shows it, if nothing was written since (its version and the mark's the same); True
    when it went. Its caller queued every event the mark may cover: the listener only the one of its write, so it
    clears only a mark that write set (`set_by_this_write`)."""
    if task.webhook_due_by is None:
        return False
    try:
        statemachine.write_fields(task, [TaskRecord.webhook_shard.remove(), TaskRecord.webhook_due.remove(),
                                         TaskRecord.webhook_due_by.remove()],
                                  condition=(TaskRecord.version == int(task.version))
                                  & (TaskRecord.webhook_due_by == int(task.webhook_due_by)))
    except StaleTask:
        return False  # written since (or deleted): a mark left is the sweeper's
    except WriteFailed as error:
        log.warning("webhook mark of task %s left to the sweeper: %s", task.task_id, error)
        return False
    return True


def due(now: float) -> Iterator[TaskRecord]:
    """Marked tasks whose mark is older than the grace, oldest first per shard, a page at most."""
    return marked_before(TaskRecord.webhooks_due, map(shard_name, range(SHARDS)), TaskRecord.webhook_due,
                         now - GRACE_S, PAGE)
