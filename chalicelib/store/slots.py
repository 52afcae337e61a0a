"""The per-model slot semaphore: the exact, live cap on calls in flight at Ark.

One record per model holds `holders` (task id -> lease expiry, epoch seconds), `owners` (task id -> user) and
`count`. Acquire is a
conditional update (`count < concurrency` and the task not already holding), release is conditional and
idempotent, and the sweeper frees leases of workers that died mid-call.

A model with `max_running_per_user` also keeps one record of the same shape per (model, user), keyed
`<model>#user#<user>`; acquire then takes both in one transaction, so a user's burst never holds every slot.
Concurrent transactions on one record conflict on real DynamoDB: a conflicted acquire runs again a few times
after a jittered pause (it took nothing), and counts as "no slot now" after that, so the task waits its turn.

A lease is whole seconds, rounded up: never shorter than what the caller asked for. Acquiring a slot the task
already holds (its earlier worker died before claiming it) extends the lease to the new worker's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.store import writes
from chalicelib.store.records import SlotRecord


def user_slot_key(model_id: str, user_id: str) -> str:
    return f"{model_id}#user#{user_id}"


def _ensure_record(slot_key: str) -> None:
    """Create the record, or complete one written before it had every map (`owners` came later): DynamoDB refuses
    to set or remove a key of a map that is not there. Idempotent, and harmless to a record in use."""
    SlotRecord(slot_key).update(actions=[
        SlotRecord.holders.set(SlotRecord.holders | {}),
        SlotRecord.owners.set(SlotRecord.owners | {}),
        SlotRecord.count.set(SlotRecord.count | 0),
    ])


def _take_update(task_id: str, limit: int, lease_until: float, owner: str | None) -> dict[str, Any]:
    """The conditional update that takes one slot for `task_id` (recording its owner, when given)."""
    actions = [SlotRecord.holders[task_id].set(math.ceil(lease_until)), SlotRecord.count.add(1)]
    if owner is not None:
        actions.append(SlotRecord.owners[task_id].set(owner))
    return {"actions": actions,
            "condition": SlotRecord.holders[task_id].does_not_exist() & (SlotRecord.count < limit)}


def acquire(model_id: str, task_id: str, concurrency: int, lease_until: float, *,
            user_id: str | None = None, user_cap: int | None = None) -> bool:
    """Take a slot for `task_id`; True when it holds one (also when it already did). Never waits.

    With `user_cap`, the task must also fit under its user's cap for this model. A refusal costs one request:
    DynamoDB returns the record as it was, which tells "full" from "already holding" and "no record yet".
    """
    return try_acquire(model_id, task_id, concurrency, lease_until, user_id=user_id, user_cap=user_cap) is None


def _keys(model_id: str, user_id: str | None, user_cap: int | None) -> list[str]:
    return [model_id] if user_cap is None or user_id is None else [model_id, user_slot_key(model_id, user_id)]


def take_in(transaction: TransactWrite, model_id: str, task_id: str, concurrency: int, lease_until: float, *,
            user_id: str | None = None, user_cap: int | None = None) -> list[str]:
    """Add the acquire's conditional updates to `transaction` (a hand-off takes a slot for a parked task and
    unparks it at once); returns the slot keys in the order their updates were added."""
    keys = _keys(model_id, user_id, user_cap)
    transaction.update(SlotRecord(model_id), **_take_update(task_id, concurrency, lease_until, user_id))
    if len(keys) > 1:
        transaction.update(SlotRecord(keys[1]), **_take_update(task_id, int(user_cap or 0), lease_until, None))
    return keys


def try_acquire(model_id: str, task_id: str, concurrency: int, lease_until: float, *,
                user_id: str | None = None, user_cap: int | None = None) -> str | None:
    """`acquire`, telling why not: None when the task holds a slot, else the key of the slot record that was
    full (the model's, or its user's under `user_cap`): what a parked task waits on."""
    keys = _keys(model_id, user_id, user_cap)
    refusal_cause: BaseException | None = None
    for attempt in range(2):
        try:
            if len(keys) == 1:
                _take_one(model_id, _take_update(task_id, concurrency, lease_until, user_id))
            else:
                def take_both(transaction: TransactWrite) -> None:
                    transaction.update(SlotRecord(model_id), return_values="ALL_OLD",
                                       **_take_update(task_id, concurrency, lease_until, user_id))
                    transaction.update(SlotRecord(keys[1]), return_values="ALL_OLD",
                                       **_take_update(task_id, int(user_cap or 0), lease_until, None))

                writes.write_transaction(take_both)
            return None
        except SlotRefused as refusal:
            records, refusal_cause = {model_id: refusal.item}, refusal.__cause__
        except TransactWriteError as error:
            refusal_cause = error
            # Only the refused record comes back; one that met its condition exists and does not hold the task.
            # A record lacking a map the update writes into cancels the transaction (AWS) or fails it (moto).
            reasons = error.cancellation_reasons or []
            records = {key: None for key in keys} if error.cause_response_code == "ValidationException" else {
                key: _refused_record(reason) for key, reason in zip(keys, reasons, strict=False)}
        missing = [key for key in keys if records.get(key, {}) is None]
        if not missing:
            held = (records.get(model_id) or {}).get("holders", {}).get("M", {}).get(task_id)
            if held is None:  # the first full record: a conflicted acquire (state unknown) counts as the model's
                return next((key for key in keys if records.get(key)), model_id)
            if int(held.get("N", 0)) < math.ceil(lease_until):
                _extend_lease(model_id, task_id, lease_until)
            return None
        if attempt:
            raise RuntimeError(f"slot records {missing} cannot be used even after completing them") from refusal_cause
        for key in missing:  # first acquire for this model (or user): create the record, then try once more
            _ensure_record(key)
    raise AssertionError("unreachable: the second attempt returns or raises")


def _extend_lease(model_id: str, task_id: str, lease_until: float) -> None:
    """A task acquiring a slot it already holds (an earlier worker took it, then died before the claim): the
    lease now covers this worker, or the sweeper would take the slot from under its call."""
    lease, held = math.ceil(lease_until), SlotRecord.holders[task_id]
    try:
        SlotRecord(model_id).update(actions=[held.set(lease)], condition=held.exists() & (held < lease))
    except UpdateError as error:
        if not writes.condition_failed(error):  # else released, or extended further meanwhile
            raise


def _refused_record(reason: Any) -> dict[str, Any] | None:
    """What a cancelled transaction says of one record: as it was (refused), None (missing or incomplete), or {}."""
    if reason is None:
        return {}
    if reason.code == "ConditionalCheckFailed":
        return reason.raw_item
    return None if reason.code == "ValidationError" else {}


def _take_one(slot_key: str, update: dict[str, Any]) -> None:
    """One conditional update; a refusal raises `SlotRefused` with the record as it was."""
    # pynamodb drops the item DynamoDB returns with a refusal: send the request it builds through botocore.
    connection = SlotRecord._get_connection().connection
    request = connection.get_operation_kwargs(
        SlotRecord.Meta.table_name, slot_key, return_values_on_condition_failure="ALL_OLD", **update
    )
    for attempt in range(writes.TRANSACTION_ATTEMPTS):
        try:
            connection.client.update_item(**request)
            return
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "ValidationException":  # the record lacks a map the update writes into
                raise SlotRefused(None) from error
            if code == writes.CONDITION_FAILED:
                raise SlotRefused(error.response.get("Item")) from error
            if not writes.is_write_conflict(error):
                raise
            if attempt == writes.TRANSACTION_ATTEMPTS - 1:
                # A user-capped acquire kept the record busy: no slot now (the record's state is unknown, so an
                # empty one stands for it); the task waits its turn like any other refused acquire.
                raise SlotRefused({}) from error
        writes.pause_before_retry(attempt)


class SlotRefused(Exception):
    def __init__(self, item: dict[str, Any] | None) -> None:
        super().__init__("no slot")
        self.item = item


def release(model_id: str, task_id: str, user_id: str | None = None) -> bool:
    """Give the slot back; True when this call released the model slot, False when it was not held.

    Idempotent. The user's slot goes first: a crash in between leaves the model slot held, which the sweeper
    frees (with the user's) once its lease expires, whereas the reverse order could leak a user slot forever.
    """
    if user_id is not None:
        _release_one(user_slot_key(model_id, user_id), task_id)
    return _release_one(model_id, task_id, SlotRecord.owners[task_id].remove())


def _release_one(slot_key: str, task_id: str, *extra: Action) -> bool:
    """True when it released; False when the task held nothing. Any other failure raises: a release that did not
    happen must not look done, or the slot would leak past the sweeper."""
    completed = False
    for attempt in range(writes.TRANSACTION_ATTEMPTS):
        try:
            SlotRecord(slot_key).update(
                actions=[SlotRecord.holders[task_id].remove(), SlotRecord.count.add(-1), *extra],
                condition=SlotRecord.holders[task_id].exists(),
            )
            return True
        except UpdateError as error:
            if writes.condition_failed(error):
                return False
            if error.cause_response_code == "ValidationException" and not completed:
                _ensure_record(slot_key)
                completed = True
                continue
            # A user-capped acquire's transaction on the same record: this conditional release may run again.
            if not writes.is_write_conflict(error) or attempt == writes.TRANSACTION_ATTEMPTS - 1:
                raise
        writes.pause_before_retry(attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def in_use(slot_key: str) -> int:
    """Slots held on a model's record (or, with `user_slot_key`, by one user of it)."""
    try:
        return int(SlotRecord.get(slot_key, consistent_read=True).count or 0)
    except DoesNotExist:
        return 0


@dataclass(frozen=True)
class Holder:
    lease_until: int
    user_id: str | None


def holders(model_id: str) -> dict[str, Holder]:
    """Who holds the model's slots: task id -> its lease and owner."""
    try:
        record = SlotRecord.get(model_id, consistent_read=True)
    except DoesNotExist:
        return {}
    leases = record.holders.as_dict() if record.holders is not None else {}
    owners = record.owners.as_dict() if record.owners is not None else {}
    return {task: Holder(int(lease), owners.get(task)) for task, lease in leases.items()}
