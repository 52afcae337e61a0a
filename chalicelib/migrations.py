"""Data migrations of a deployed stage, run by an operator against the stage's tables (see the README):

    ARKFLOW_PREFIX=arkflow-prod AWS_DEFAULT_REGION=<region> python -m chalicelib.migrations user-ids [--dry-run]

Each migration is idempotent: a second run changes nothing that the first did, and finishes what it could not.

`user-ids` moves everything that was keyed by username onto the account's user id (`UserRecord.user_id`):
accounts get an id, and so do the owners of tasks, slot holdings, per-user quota counters, idempotency keys,
uploads and open connections. A task older than the account now holding its name belonged to an earlier
account of that name (deleted, then the name reused): it gets an id of its own that no account has, so
nobody inherits it. Sessions and WebSocket tickets of the old shape cannot be used any more (users log in
again), so they are deleted. A running task moves with its slot holdings in one transaction; one that changed
meanwhile is left for the next run, and the command says so.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition

from chalicelib.accounts.auth import ensure_user_id
from chalicelib.ids import USER_ID_PREFIX, new_user_id
from chalicelib.store import slots, statemachine, writes
from chalicelib.store.records import (
    ConnectionRecord,
    IdempotencyRecord,
    QuotaRecord,
    SessionRecord,
    SlotRecord,
    TaskRecord,
    UploadRecord,
    UserRecord,
    WsTicketRecord,
)

# A counter raced by live traffic is tried again this many times before it is left for the next run.
_MOVE_ATTEMPTS = 5


@dataclass
class MigrationReport:
    changed: Counter[str] = field(default_factory=Counter)
    # Items that changed while being migrated (a running task's transition, a counter's update): run again.
    pending: Counter[str] = field(default_factory=Counter)

    def lines(self) -> Iterator[str]:
        for what, count in sorted(self.changed.items()):
            yield f"{what}: {count}"
        for what, count in sorted(self.pending.items()):
            yield f"left for the next run ({what}): {count}"
        if not self.changed and not self.pending:
            yield "nothing to migrate"


def _is_conflict(error: Exception) -> bool:
    return isinstance(error, TransactWriteError | UpdateError | DeleteError) and error.cause_response_code in (
        "ConditionalCheckFailedException", "TransactionCanceledException")


class UserIdMigration:
    def __init__(self, *, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.report = MigrationReport()
        self.accounts: dict[str, UserRecord] = {}
        self.account_ids: set[str] = set()
        # Names of accounts deleted (or replaced) before this migration -> the id their old tasks get.
        self.orphan_ids: dict[str, str] = {}

    def run(self) -> MigrationReport:
        self._users()
        self._tasks()
        self._user_slots()
        self._quota_counters()
        self._idempotency_keys()
        self._owned_by_name(UploadRecord, UploadRecord.user_id, "uploads")
        self._owned_by_name(ConnectionRecord, ConnectionRecord.user_id, "connections")
        self._delete_old_shape(SessionRecord, SessionRecord.user_id, "sessions of the old shape deleted")
        self._delete_old_shape(WsTicketRecord, WsTicketRecord.session_id, "tickets of the old shape deleted")
        return self.report

    # --- accounts ------------------------------------------------------------------------------------------

    def _users(self) -> None:
        for user in UserRecord.scan(consistent_read=True):
            if not user.user_id:
                self.report.changed["users given an id"] += 1
                if self.dry_run:
                    user.user_id = new_user_id()
                else:
                    ensure_user_id(user)
            self.accounts[user.username] = user
            self.account_ids.add(str(user.user_id))

    def _id_for_name(self, value: str) -> str | None:
        """The user id a value of the old shape (a username) stands for; None when `value` is not one."""
        if value in self.account_ids:
            return None  # migrated already
        account = self.accounts.get(value)
        return str(account.user_id) if account else None

    # --- tasks and their slots -----------------------------------------------------------------------------

    def _task_owner(self, task: TaskRecord) -> str:
        name = task.user_id
        account = self.accounts.get(name)
        if account is not None and task.created_at >= account.created_at:
            return str(account.user_id)
        self.report.changed["tasks of an earlier account of their name (given an id of their own)"] += 1
        return self.orphan_ids.setdefault(name, new_user_id())

    def _tasks(self) -> None:
        for task in TaskRecord.scan(filter_condition=TaskRecord.username.does_not_exist(), consistent_read=True):
            name, owner_id = task.user_id, self._task_owner(task)
            actions = [
                TaskRecord.user_id.set(owner_id),
                TaskRecord.username.set(name),
                TaskRecord.quota_keys.set([_counter_for(key, name, owner_id) for key in task.quota_keys or []]),
            ]
            unchanged = (TaskRecord.user_id == name) & TaskRecord.username.does_not_exist() & (
                TaskRecord.status == task.status) & (TaskRecord.version == task.version)
            if self.dry_run:
                self.report.changed["tasks"] += 1
                continue
            try:
                if task.status == statemachine.RUNNING:
                    self._move_running(task, name, owner_id, actions, unchanged)
                else:
                    task.update(actions=actions, condition=unchanged)
            except (TransactWriteError, UpdateError) as error:
                if not _is_conflict(error):
                    raise
                self.report.pending["tasks that changed meanwhile"] += 1
                continue
            self.report.changed["tasks"] += 1

    def _move_running(self, task: TaskRecord, name: str, owner_id: str, actions: list[Any],
                      unchanged: Condition) -> None:
        """A running task changes owner with the slots it holds, in one transaction, so that whoever releases
        them (reading the task) releases what is held: the model slot's owner entry and the user slot."""
        model_slot = _slot(task.model_id)
        owners = model_slot.owners.as_dict() if model_slot and model_slot.owners is not None else {}
        old_key, new_key = slots.user_slot_key(task.model_id, name), slots.user_slot_key(task.model_id, owner_id)
        user_slot = _slot(old_key)
        leases = user_slot.holders.as_dict() if user_slot and user_slot.holders is not None else {}
        if task.task_id in leases:
            slots.ensure_record(new_key)
        with writes.transaction() as transaction:
            transaction.update(task, actions=actions, condition=unchanged)
            if owners.get(task.task_id) == name:
                transaction.update(SlotRecord(task.model_id), actions=[SlotRecord.owners[task.task_id].set(owner_id)],
                                   condition=SlotRecord.owners[task.task_id] == name)
            if task.task_id in leases:
                transaction.update(SlotRecord(old_key),
                                   actions=[SlotRecord.holders[task.task_id].remove(), SlotRecord.count.add(-1)],
                                   condition=SlotRecord.holders[task.task_id].exists())
                transaction.update(SlotRecord(new_key),
                                   actions=[SlotRecord.holders[task.task_id].set(int(leases[task.task_id])),
                                            SlotRecord.count.add(1)],
                                   condition=SlotRecord.holders[task.task_id].does_not_exist())
        self.report.changed["running tasks moved with their slots"] += 1

    def _user_slots(self) -> None:
        """Per-user slot records keyed by a name drain as their tasks end; a holding left there by a worker
        that claimed its task while the task was being migrated is freed once that task no longer runs."""
        for record in SlotRecord.scan(consistent_read=True):
            _, marker, owner = record.model_id.partition("#user#")
            if not marker or owner.startswith(USER_ID_PREFIX) or owner in self.account_ids:
                continue
            leases = record.holders.as_dict() if record.holders is not None else {}
            for task_id in leases:
                task = _task(task_id)
                if task is not None and task.status == statemachine.RUNNING and task.user_id == owner:
                    continue  # still running under the name: its release frees it
                self.report.changed["stale slot holdings freed"] += 1
                if not self.dry_run:
                    slots._release_one(record.model_id, task_id)
            if not self.dry_run:
                try:
                    SlotRecord(record.model_id).delete(condition=SlotRecord.count == 0)
                    self.report.changed["user slot records of a name removed"] += 1
                except DeleteError as error:
                    if not _is_conflict(error):
                        raise

    # --- counters, keys and short-lived records --------------------------------------------------------------

    def _quota_counters(self) -> None:
        for record in QuotaRecord.scan(consistent_read=True):
            scope, _, rest = record.quota_key.partition("#")
            name, _, counter = rest.partition("#")
            owner_id = self._id_for_name(name) if scope == "user" and counter else None
            if owner_id is None:
                continue
            self.report.changed["quota counters"] += 1
            if not self.dry_run:
                self._move_counter(record.quota_key, f"user#{owner_id}#{counter}")

    def _move_counter(self, old_key: str, new_key: str) -> None:
        """Add the counter's use to the account's counter of the same day and remove it, atomically (a task
        ending meanwhile gives its request back to whichever key it names; both sums stay exact)."""
        for _ in range(_MOVE_ATTEMPTS):
            try:
                old = QuotaRecord.get(old_key, consistent_read=True)
            except DoesNotExist:
                return
            try:
                with writes.transaction() as transaction:
                    transaction.update(QuotaRecord(new_key), actions=[
                        QuotaRecord.used.add(int(old.used)),
                        QuotaRecord.expires_at_epoch.set(QuotaRecord.expires_at_epoch | int(old.expires_at_epoch)),
                    ])
                    transaction.delete(QuotaRecord(old_key), condition=QuotaRecord.used == old.used)
                return
            except TransactWriteError as error:
                if not _is_conflict(error):
                    raise
        self.report.pending["quota counters in use"] += 1

    def _idempotency_keys(self) -> None:
        for record in IdempotencyRecord.scan(consistent_read=True):
            name, marker, key = record.idempotency_key.partition("#")
            owner_id = self._id_for_name(name) if marker else None
            if owner_id is None:
                continue
            self.report.changed["idempotency keys"] += 1
            if self.dry_run:
                continue
            moved = IdempotencyRecord(f"{owner_id}#{key}", fingerprint=record.fingerprint, task_id=record.task_id,
                                      status_code=record.status_code, response_body=record.response_body,
                                      expires_at_epoch=record.expires_at_epoch)
            try:
                moved.save(condition=IdempotencyRecord.idempotency_key.does_not_exist())
            except PutError as error:  # a key the account used again since the deploy keeps its own answer
                if error.cause_response_code != "ConditionalCheckFailedException":
                    raise
            record.delete()

    def _owned_by_name(self, record_class: Any, owner: Any, what: str) -> None:
        for record in record_class.scan(consistent_read=True):
            owner_id = self._id_for_name(record.user_id)
            if owner_id is None:
                continue
            self.report.changed[what] += 1
            if self.dry_run:
                continue
            try:
                record.update(actions=[owner.set(owner_id)], condition=owner == record.user_id)
            except UpdateError as error:
                if not _is_conflict(error):
                    raise  # else gone meanwhile (closed, expired): nothing to move

    def _delete_old_shape(self, record_class: Any, marker: Any, what: str) -> None:
        for record in record_class.scan(filter_condition=marker.does_not_exist(), consistent_read=True):
            self.report.changed[what] += 1
            if not self.dry_run:
                record.delete()


def _counter_for(quota_key: str, name: str, owner_id: str) -> str:
    prefix = f"user#{name}#"
    return f"user#{owner_id}#{quota_key[len(prefix):]}" if quota_key.startswith(prefix) else quota_key


def _slot(slot_key: str) -> SlotRecord | None:
    try:
        return SlotRecord.get(slot_key, consistent_read=True)
    except DoesNotExist:
        return None


def _task(task_id: str) -> TaskRecord | None:
    try:
        return TaskRecord.get(task_id, consistent_read=True)
    except DoesNotExist:
        return None


MIGRATIONS = {"user-ids": UserIdMigration}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.migrations", description=__doc__.split("\n\n")[0])
    parser.add_argument("migration", choices=sorted(MIGRATIONS))
    parser.add_argument("--dry-run", action="store_true", help="count what would change; write nothing")
    args = parser.parse_args(argv)
    report = MIGRATIONS[args.migration](dry_run=args.dry_run).run()
    for line in report.lines():
        print(line)
    return 3 if report.pending else 0


if __name__ == "__main__":
    sys.exit(main())
