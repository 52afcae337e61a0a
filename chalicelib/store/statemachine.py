"""The task state machine: the only way any code changes a task's status.

Every transition is one DynamoDB conditional write on the status and version the caller read, so a duplicate
SQS delivery, a retried Lambda, a callback racing the poller or a second worker find the condition false and
change nothing. A task that ends before any Ark call gives its quota request back in the same transaction.

A task is `running` only while it holds a slot of its model (`chalicelib.store.slots`): workers acquire the slot
before the claim `queued -> running`, and every transition out of `running` (to a terminal state, or back to
`queued` after a retryable Ark error) releases it here, once the write succeeded, so no path can forget it
(a release that fails leaves the slot to the sweeper, never the transition unpublished).

Only a false condition makes a write `StaleTask` (someone else changed the task: re-read and decide again). Any
other failure of the write is `WriteFailed`, an error to retry (a worker's message comes back, a route answers
503), never a reason to undo work. A refund's transaction that meets a conflict on its hot quota counter runs
again (`writes.write_transaction`). A video Ark accepted (its `external_id` stored) never goes back to `queued`.

Every other write of a task's fields goes through `update_fields` (a change with the status unchanged) or
`write_fields` (bookkeeping no watcher sees: a message's receipt, a reconcile round), so this module is the one
place that writes a task once it exists. Listeners (`listeners`, `slot_listeners`) and write hooks (`write_hooks`:
more actions for a transition's own write, such as the webhook outbox's mark) are registered by `chalicelib.wiring`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.store import quota, slots, writes
from chalicelib.store.errors import IllegalTransition, write_error
from chalicelib.store.records import TaskRecord

log = logging.getLogger(__name__)

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED, EXPIRED = "succeeded", "failed", "cancelled", "expired"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED, EXPIRED}),
    # Back to `queued`: a retryable Ark error (or a worker lost mid-call); the slot is released with it.
    RUNNING: frozenset({QUEUED, SUCCEEDED, FAILED, EXPIRED, CANCELLED}),
}

# Called with the task as written, after every successful transition (the WebSocket publisher listens here).
Listener = Callable[[TaskRecord], None]
listeners: list[Listener] = []
# Gives back the slot of a task leaving `running` (or ending while a slot was handed to it); True when it left the
# task. The lanes' waker replaces the plain release with a hand-off to a parked task (`chalicelib.wiring`).
SlotReleaser = Callable[[TaskRecord], bool]


def release_plainly(task: TaskRecord) -> bool:
    return slots.release(task.model_id, task.task_id, None if task.user_slot is False else task.user_id)


slot_releaser: list[SlotReleaser] = [release_plainly]
# More actions for a transition's own write, from the task as read, the target and the write's time (epoch seconds):
# what must be written with the change or not at all (`chalicelib.webhooks.outbox`'s mark).
WriteHook = Callable[[TaskRecord, str, float], list[Action]]
write_hooks: list[WriteHook] = []
# Called with the task as written after a transition that gave its quota back (the audit trail listens here): after
# the refund's transaction, never in it (it writes the model's hot quota counter and stays as small as it can). A
# listener that fails is logged; the transition stands.
refund_listeners: list[Listener] = []


def is_allowed(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def transition(
    task: TaskRecord,
    target: str,
    *,
    actions: list[Action] | None = None,
    condition: Condition | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> TaskRecord:
    """Move `task` (as read) to `target`, applying `actions` in the same write; returns the written task."""
    if not is_allowed(task.status, target):
        raise IllegalTransition(
            f"A task cannot go from {task.status} to {target}.",
            details={"from": task.status, "to": target},
        )
    moment = clock.now()
    now = iso(moment)
    changes = [
        TaskRecord.status.set(target),
        TaskRecord.version.add(1),
        TaskRecord.updated_at.set(now),
        *(actions or []),
    ]
    for hook in write_hooks:
        changes += hook(task, target, moment)
    guard = (TaskRecord.status == task.status) & (TaskRecord.version == task.version)
    if task.status == QUEUED:
        changes += [TaskRecord.queued_model.remove(), TaskRecord.parked_model.remove(),
                    TaskRecord.slot_handed_at.remove()]
        # A hand-off or a park writes no version: what the caller read of them must still hold.
        guard &= TaskRecord.slot_handed_at.does_not_exist() if task.slot_handed_at is None else (
            TaskRecord.slot_handed_at == task.slot_handed_at)
        guard &= TaskRecord.parked_model.does_not_exist() if task.parked_model is None else (
            TaskRecord.parked_model == task.parked_model)
    if target == QUEUED:
        if task.type == "video":
            # Ark has it (or may): queueing it again would make a worker create it a second time.
            if task.external_id:
                raise IllegalTransition("A video Ark accepted never goes back to the queue.",
                                        details={"from": task.status, "to": target})
            guard &= TaskRecord.external_id.does_not_exist()
        changes += [TaskRecord.queued_model.set(task.model_id), TaskRecord.stage.remove()]
    if target == RUNNING:
        changes.append(TaskRecord.started_at.set(now))
    if target in TERMINAL:
        changes += [TaskRecord.finished_at.set(now), TaskRecord.poll_shard.remove(), TaskRecord.next_poll_at.remove()]
    if condition is not None:
        guard &= condition
    leaves_running = task.status == RUNNING
    # Ending while a slot was handed to it (never claimed): the slot goes on to the next parked task.
    gives_back_handed = task.status == QUEUED and task.slot_handed_at is not None and target != RUNNING
    unparks = task.status == QUEUED and task.parked_model is not None
    refund = target in TERMINAL and not task.ark_called and not task.quota_refunded and bool(task.quota_keys)
    try:
        if refund:
            _write_with_refund(task, changes, guard)
        else:
            task.update(actions=changes, condition=guard)
    except (UpdateError, TransactWriteError) as exc:
        raise write_error(exc) from exc
    if unparks:
        _count_unparked(task)
    if leaves_running or gives_back_handed:
        _release_slot(task)
    if refund:
        _tell_refund(task)
    notify(task)
    return task


def _tell_refund(task: TaskRecord) -> None:
    for listener in refund_listeners:
        try:
            listener(task)
        except (PynamoDBException, ClientError) as error:
            log.warning("refund of task %s not told to %s: %s", task.task_id, listener.__name__, error)


def notify(task: TaskRecord) -> None:
    """Tell every listener about the task as written (a transition, a visible change, or its creation)."""
    for listener in listeners:
        listener(task)


def _release_slot(task: TaskRecord) -> None:
    try:
        slot_releaser[0](task)
    except (PynamoDBException, ClientError) as error:
        # The transition is written and must still be published and acted on. The slot stays held (its user's
        # too, if that release failed first), and the sweeper frees both: the task is no longer running.
        log.warning("slot of task %s stays held for the sweeper to free: %s", task.task_id, error)


def _count_unparked(task: TaskRecord) -> None:
    """A parked task left `queued` without a hand-off (its own acquire won, it was cancelled or timed out)."""
    try:
        slots.count_parked(task.model_id, -1)
    except (PynamoDBException, ClientError) as error:
        # Counted ahead of the index: releases read it once more for nothing until a hand-off finds it empty.
        log.warning("parked count of %s stays ahead: %s", task.model_id, error)


def _write_with_refund(task: TaskRecord, actions: list[Action], guard: Condition) -> None:
    """End a task that never reached Ark and give its quota request back, atomically and once."""
    actions.append(TaskRecord.quota_refunded.set(True))
    guard &= TaskRecord.quota_refunded == False  # noqa: E712 - a DynamoDB condition, not a Python comparison

    def refund(transaction: TransactWrite) -> None:
        transaction.update(task, actions=actions, condition=guard)
        quota.give_back(transaction, task.quota_keys)

    writes.write_transaction(refund)  # the counter is hot (every create of the model writes it): conflicts run again
    task.refresh(consistent_read=True)


def update_fields(task: TaskRecord, actions: list[Action], *, publish: bool = False,
                  condition: Condition | None = None, clock: Clock = SYSTEM_CLOCK) -> TaskRecord:
    """Change non-status fields while the status stays what was read (e.g. storing Ark's task id).

    `publish` bumps the version and notifies listeners, for changes a watching user should see; `condition`
    adds to the status check (e.g. the sub-step still being what was read).
    """
    changes = [TaskRecord.updated_at.set(iso(clock.now())), *actions]
    if publish:
        changes.append(TaskRecord.version.add(1))
    guard = TaskRecord.status == task.status
    if condition is not None:
        guard &= condition
    write_fields(task, changes, condition=guard)
    if publish:
        notify(task)
    return task


def update_fields_together(task: TaskRecord, values: dict[str, Any], *, together: Callable[[TransactWrite], None],
                           publish: bool = False, condition: Condition | None = None,
                           clock: Clock = SYSTEM_CLOCK) -> TaskRecord:
    """`update_fields` setting `values` (attribute name -> value), in one transaction with the writes `together`
    adds (a record that must exist exactly when these fields do); `task` is updated in memory as written.

    StaleTask when only the task's condition was false; the TransactWriteError itself when a write of `together`
    was refused (its reasons come first, in the order DynamoDB took them), WriteFailed for any other refusal.
    """
    values = {"updated_at": iso(clock.now()), **values}
    changes = [getattr(TaskRecord, name).set(value) for name, value in values.items()]
    if publish:
        changes.append(TaskRecord.version.add(1))
    guard = TaskRecord.status == task.status
    if condition is not None:
        guard &= condition

    def build(transaction: TransactWrite) -> None:
        together(transaction)
        transaction.update(TaskRecord(task.task_id), actions=changes, condition=guard)  # the last item

    try:
        writes.write_transaction(build)
    except TransactWriteError as exc:
        reasons = exc.cancellation_reasons or []
        if writes.condition_failed(exc) and any(reason is not None and reason.code == "ConditionalCheckFailed"
                                                for reason in reasons[:-1]):
            raise
        raise write_error(exc) from exc
    for name, value in values.items():
        setattr(task, name, value)
    if publish:
        task.version = int(task.version or 0) + 1
        notify(task)
    return task


def write_fields(task: TaskRecord, actions: list[Action], *, condition: Condition,
                 stale_message: str | None = None) -> TaskRecord:
    """Apply `actions` where `condition` holds, stamping nothing: bookkeeping no watcher sees (the receipt of a
    deferred message, a reconcile round), and the write under `update_fields`. StaleTask when the condition is
    false (`stale_message` says why), WriteFailed for any other refusal."""
    try:
        task.update(actions=actions, condition=condition)
    except UpdateError as exc:
        raise (write_error(exc, stale_message) if stale_message else write_error(exc)) from exc
    return task

