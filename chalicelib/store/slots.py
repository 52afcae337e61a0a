"""The per-model slot semaphore: the exact, live cap on calls in flight at Ark.

One record per model holds `holders` (task id -> lease expiry, epoch seconds), `owners` (task id -> user) and
`count`. Acquire is a
conditional update (`count < limit` and the task not already holding), release is conditional and idempotent,
and the sweeper frees leases of workers that died mid-call. The record carries the model's limits (`limit`,
`user_cap`), written in the same transaction as the model (`configure_in`): an acquire reads no model.

A model with `max_running_per_user` also keeps one record of the same shape per (model, user), keyed
`<model>#user#<user>`; acquire then takes both in one transaction, so a user's burst never holds every slot.
Concurrent transactions on one record conflict on real DynamoDB: a conflicted acquire runs again a few times
after a jittered pause (it took nothing), and counts as "no slot now" after that, so the task waits its turn.

A lease is whole seconds, rounded up: never shorter than what the caller asked for. Acquiring a slot the task
already holds (its earlier worker died before claiming it) extends the lease to the new worker's.

The record also carries the model's circuit (`chalicelib.lanes.circuit`): an acquire or a hand-off takes a slot
only while it is closed (no `circuit`), except the one acquire that elects itself the probe of an open circuit
whose cool-down has passed (conditional: of two workers, one wins).
"""

from __future__ import annotations

import functools
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


def ensure_record(slot_key: str) -> None:
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


class SlotsUnconfigured(Exception):
    """The model's slot record carries no `limit` yet (written before limits lived there, or its model was
    deleted): the caller reads the model and writes it with `configure` (`if_missing`), then acquires again."""


@dataclass(frozen=True)
class Held:
    """The task holds a slot. `user_slot`: whether its user's slot was taken too (None: held from before)."""

    user_slot: bool | None
    # It was let through to an open circuit as its probe (the circuit is half-open now).
    probe: bool = False


@dataclass(frozen=True)
class Refused:
    """The record `slot_key` was full: what a parked task waits on (the park checks it still is). `user_cap`: the
    user record's limit (a model record carries its own)."""

    slot_key: str
    user_cap: int | None = None
    # Refused by the model's circuit (open or half-open), not for want of a slot: it waits for the circuit.
    circuit: bool = False

    def still_full(self) -> Any:
        """The condition a park checks on `slot_key`, in the same transaction."""
        if self.circuit:
            return SlotRecord.circuit.exists()
        if self.user_cap is None:
            return SlotRecord.count >= SlotRecord.limit
        return SlotRecord.count >= self.user_cap


# model id -> the `user_cap` its slot record had when last seen: which acquire to try first. Only a guess: the
# acquire's condition checks it against the record, and a wrong guess costs one refused request, then the truth.
_user_cap_seen: dict[str, int | None] = {}
# model id -> whether its record was full when last seen here: a new task of a model seen full parks first (one
# request; its condition is that the record is still full) instead of a refused acquire and then a park.
_full_seen: dict[str, bool] = {}


def looked_full(model_id: str) -> bool:
    return _full_seen.get(model_id, False)


def note_full(model_id: str, full: bool) -> None:
    _full_seen[model_id] = full


def configure(model_id: str, concurrency: int, user_cap: int | None, *, if_missing: bool = False) -> None:
    """Write the model's limits on its slot record (creating or completing it). With `if_missing`, only where
    none is written yet: a model change written meanwhile is never overwritten with an older read."""
    try:
        SlotRecord(model_id).update(actions=_configure_actions(concurrency, user_cap),
                                    condition=SlotRecord.limit.does_not_exist() if if_missing else None)
    except UpdateError as error:
        if not (if_missing and writes.condition_failed(error)):
            raise


def configure_in(transaction: TransactWrite, model_id: str, concurrency: int, user_cap: int | None) -> None:
    """`configure` inside the model's own write, so the limits acquires read are always the model's."""
    transaction.update(SlotRecord(model_id), actions=_configure_actions(concurrency, user_cap))


def unconfigure_in(transaction: TransactWrite, model_id: str) -> None:
    """The model is deleted: its slot record loses its limits, so an acquire looks the model up (and finds none)."""
    transaction.update(SlotRecord(model_id), actions=[SlotRecord.limit.remove(), SlotRecord.user_cap.remove()])


def _configure_actions(concurrency: int, user_cap: int | None) -> list[Action]:
    return [SlotRecord.holders.set(SlotRecord.holders | {}), SlotRecord.owners.set(SlotRecord.owners | {}),
            SlotRecord.count.set(SlotRecord.count | 0), SlotRecord.limit.set(int(concurrency)),
            SlotRecord.user_cap.remove() if user_cap is None else SlotRecord.user_cap.set(int(user_cap))]


def _keys(model_id: str, user_id: str | None, user_cap: int | None) -> list[str]:
    return [model_id] if user_cap is None or user_id is None else [model_id, user_slot_key(model_id, user_id)]


def _model_condition(task_id: str, user_cap: int | None, *, circuit_closed: bool = True) -> Any:
    """The model record's side of an acquire: free, not yet held by the task, capped as the caller thinks, and
    its circuit closed."""
    cap = SlotRecord.user_cap.does_not_exist() if user_cap is None else SlotRecord.user_cap == user_cap
    condition = SlotRecord.holders[task_id].does_not_exist() & (SlotRecord.count < SlotRecord.limit) & cap
    return condition & SlotRecord.circuit.does_not_exist() if circuit_closed else condition


def take_in(transaction: TransactWrite, model_id: str, task_id: str, lease_until: float, *,
            user_id: str | None = None, user_cap: int | None = None, unparking: bool = False,
            probe_at: float | None = None) -> list[str]:
    """Add an acquire's conditional updates to `transaction` (a hand-off takes a slot for a parked task and unparks
    it at once, `unparking`: counted down; `probe_at`: as the probe of the open circuit); returns the slot keys in
    the order their updates were added."""
    keys = _keys(model_id, user_id, user_cap)
    update = _model_take(task_id, lease_until, user_id, user_cap, probe_at)
    if unparking:
        update["actions"].append(SlotRecord.parked.add(-1))
    transaction.update(SlotRecord(model_id), return_values="ALL_OLD", **update)
    if len(keys) > 1:
        transaction.update(SlotRecord(keys[1]), return_values="ALL_OLD",
                           **_take_update(task_id, int(user_cap or 0), lease_until, None))
    return keys


def _model_take(task_id: str, lease_until: float, owner: str | None, user_cap: int | None,
                probe_at: float | None = None) -> dict[str, Any]:
    """The model record's take: while its circuit is closed, or (`probe_at`) electing the task the probe of an
    open circuit whose cool-down has passed: the circuit becomes half-open, and no second task can be elected."""
    update = _take_update(task_id, 0, lease_until, owner)
    update["condition"] = _model_condition(task_id, user_cap)
    if probe_at is not None:
        update["condition"] = _model_condition(task_id, user_cap, circuit_closed=False) & (
            SlotRecord.circuit == CIRCUIT_OPEN) & (SlotRecord.circuit_retry_at <= probe_at)
        update["actions"] += [SlotRecord.circuit.set(CIRCUIT_HALF_OPEN), SlotRecord.circuit_since.set(probe_at),
                              SlotRecord.circuit_probe.set(task_id)]
    return update


CIRCUIT_OPEN, CIRCUIT_HALF_OPEN = "open", "half_open"


def probe_due(record: dict[str, Any], now: float) -> bool:
    """Whether a record (as DynamoDB returned it) has an open circuit whose cool-down has passed."""
    return (record.get("circuit", {}).get("S") == CIRCUIT_OPEN
            and float(record.get("circuit_retry_at", {}).get("N", "inf")) <= now)


def try_acquire(model_id: str, task_id: str, lease_until: float, *, user_id: str | None = None,
                extend_held: bool = True, now: float | None = None) -> Held | Refused:
    """Take a slot of `model_id` for `task_id` under the limits its slot record carries (and its user's slot too
    when the record has a `user_cap`). Never waits. A refusal costs one request: DynamoDB returns the record as it
    was, which tells "full" from "already holding", "capped otherwise than guessed" and "not configured". A slot
    already held has its lease extended to `lease_until` unless `extend_held` is false (the caller has not read
    the task yet: a running task's lease is its worker's, never a duplicate message's).

    Refused by an open circuit whose cool-down has passed by `now` (when given), it tries once more as the
    circuit's probe; refused by the circuit otherwise, the answer says so (`Refused.circuit`)."""
    refusal_cause: BaseException | None = None
    probe_at: float | None = None
    for _ in range(5):
        user_cap = _user_cap_seen.get(model_id)
        keys = _keys(model_id, user_id, user_cap)
        try:
            if len(keys) == 1:
                _take_one(model_id, _model_take(task_id, lease_until, user_id, None, probe_at))
            else:
                writes.write_transaction(functools.partial(
                    _take_both, (model_id, _model_take(task_id, lease_until, user_id, user_cap, probe_at)),
                    (keys[1], _take_update(task_id, int(user_cap or 0), lease_until, None))))
            _full_seen[model_id] = False
            return Held(user_slot=len(keys) > 1, probe=probe_at is not None)
        except SlotRefused as refusal:
            records, refusal_cause = {model_id: refusal.item}, refusal.__cause__
        except TransactWriteError as error:
            refusal_cause = error
            # Only the refused record comes back; one that met its condition exists and does not hold the task.
            # A record lacking a map the update writes into cancels the transaction (AWS) or fails it (moto).
            reasons = error.cancellation_reasons or []
            records = {key: None for key in keys} if error.cause_response_code == "ValidationException" else {
                key: _refused_record(reason) for key, reason in zip(keys, reasons, strict=False)}
        model_record = records.get(model_id, {})
        if model_record:
            held = model_record.get("holders", {}).get("M", {}).get(task_id)
            if held is not None:
                if extend_held and int(held.get("N", 0)) < math.ceil(lease_until):
                    extend_lease(model_id, task_id, lease_until)
                return Held(user_slot=None)
            if "limit" not in model_record:
                raise SlotsUnconfigured(model_id) from refusal_cause
            seen_cap = int(model_record["user_cap"]["N"]) if "user_cap" in model_record else None
            if seen_cap != user_cap:
                _user_cap_seen[model_id] = seen_cap
                continue  # capped otherwise than guessed: again, the way the record says
            if "circuit" in model_record:
                if probe_at is None and now is not None and probe_due(model_record, now):
                    probe_at = now  # the cool-down passed: once more, as the probe (one worker's wins)
                    continue
                return Refused(model_id, circuit=True)
            if probe_at is not None:  # closed meanwhile: an acquire like any other
                probe_at = None
                continue
            _full_seen[model_id] = True
            return Refused(model_id)
        if model_record is None:  # no record, or one lacking a map: complete it (its limits decide next round)
            ensure_record(model_id)
            continue
        user_record = records.get(keys[-1]) if len(keys) > 1 else {}
        if user_record is None:
            ensure_record(keys[-1])
            continue
        if user_record:
            return Refused(keys[-1], int(user_cap or 0))
        # Conflicted (state unknown): counts as the model's record full, so the task waits its turn.
        return Refused(model_id)
    raise RuntimeError(f"slot record {model_id} cannot be used even after completing it") from refusal_cause


def _take_both(model_take: tuple[str, dict[str, Any]], user_take: tuple[str, dict[str, Any]],
               transaction: TransactWrite) -> None:
    for key, update in (model_take, user_take):
        transaction.update(SlotRecord(key), return_values="ALL_OLD", **update)


def extend_lease(model_id: str, task_id: str, lease_until: float) -> None:
    """A task acquiring a slot it already holds (an earlier worker took it, then died before the claim): the
    lease now covers this worker, or the sweeper would take the slot from under its call."""
    lease, held = math.ceil(lease_until), SlotRecord.holders[task_id]
    try:
        SlotRecord(model_id).update(actions=[held.set(lease)], condition=held.exists() & (held < lease))
    except UpdateError as error:
        if not writes.condition_failed(error):  # else released, or extended further meanwhile
            raise


def refusal_of(reason: Any) -> str | None:
    """One record's part in a cancelled transaction: None (it passed, or was not judged), "refused" (its condition
    false on a record that exists), or "missing" (no record, or one lacking a map its update writes into)."""
    if reason is None or reason.code in (None, "None"):
        return None
    if reason.code == "ConditionalCheckFailed":
        return "refused" if reason.raw_item else "missing"
    return "missing" if reason.code == "ValidationError" else None


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
    return release_counting_parked(model_id, task_id, user_id)[0]


def release_counting_parked(model_id: str, task_id: str, user_id: str | None = None) -> tuple[bool, int]:
    """`release`, and how many tasks the model's record counts parked once it is done (what a release that read
    no parked task checks: one may have parked since)."""
    if user_id is not None:
        _release_one(user_slot_key(model_id, user_id), task_id)
    record = _release_one(model_id, task_id, SlotRecord.owners[task_id].remove())
    return record is not None, int(record.parked or 0) if record is not None else 0


def _release_one(slot_key: str, task_id: str, *extra: Action) -> SlotRecord | None:
    """The record as released; None when the task held nothing. Any other failure raises: a release that did not
    happen must not look done, or the slot would leak past the sweeper."""
    completed = False
    for attempt in range(writes.TRANSACTION_ATTEMPTS):
        record = SlotRecord(slot_key)
        try:
            record.update(
                actions=[SlotRecord.holders[task_id].remove(), SlotRecord.count.add(-1), *extra],
                condition=SlotRecord.holders[task_id].exists(),
            )
            return record
        except UpdateError as error:
            if writes.condition_failed(error):
                return None
            if error.cause_response_code == "ValidationException" and not completed:
                ensure_record(slot_key)
                completed = True
                continue
            # A user-capped acquire's transaction on the same record: this conditional release may run again.
            if not writes.is_write_conflict(error) or attempt == writes.TRANSACTION_ATTEMPTS - 1:
                raise
        writes.pause_before_retry(attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def release_in(transaction: TransactWrite, model_id: str, task_id: str, user_id: str | None, *,
               parking: bool = False) -> None:
    """The release's updates in `transaction` (conditional: the task holds; its user's slot when `user_id`);
    `parking`: the task parks again in the same transaction (counted on the model's record)."""
    held = SlotRecord.holders[task_id]
    actions = [held.remove(), SlotRecord.owners[task_id].remove(), SlotRecord.count.add(-1)]
    if parking:
        actions.append(SlotRecord.parked.add(1))
    transaction.update(SlotRecord(model_id), actions=actions, condition=held.exists())
    if user_id is not None:
        transaction.update(SlotRecord(user_slot_key(model_id, user_id)),
                           actions=[held.remove(), SlotRecord.count.add(-1)], condition=held.exists())


def count_parked_in(transaction: TransactWrite, model_id: str, delta: int, *, condition: Any = None) -> None:
    """Count a park (+1) or an unpark (-1) on the model's record, in the transaction that parks or unparks."""
    transaction.update(SlotRecord(model_id), actions=[SlotRecord.parked.add(delta)], condition=condition)


def count_parked(model_id: str, delta: int) -> None:
    """`count_parked_in` on its own: a parked task that ended (or ran) without a hand-off."""
    SlotRecord(model_id).update(actions=[SlotRecord.parked.add(delta)])


def reset_parked(model_id: str, seen: int) -> None:
    """The index holds no parked task of the model: its count goes back to 0 unless a park counted meanwhile."""
    try:
        SlotRecord(model_id).update(actions=[SlotRecord.parked.set(0)], condition=SlotRecord.parked == seen)
    except UpdateError as error:
        if not writes.condition_failed(error):
            raise


def move_in(transaction: TransactWrite, model_id: str, from_task: str, from_user: str | None, to_task: str,
            to_user: str | None, lease_until: float, *, user_cap: int | None,
            released_user_slot: bool) -> list[tuple[str, str]]:
    """Add to `transaction` the updates that hand `from_task`'s slot to `to_task` (a parked task): the holder
    changes, the count stays, the parked count goes down. Refused when `from_task` no longer holds, the model's
    limits went below its count or differ from `user_cap`, or `to_task`'s user is at the cap. Returns each
    record's key and role (`model`, `from_user`, `to_user`) in the order their updates were added."""
    lease = math.ceil(lease_until)
    cap = SlotRecord.user_cap.does_not_exist() if user_cap is None else SlotRecord.user_cap == user_cap
    actions: list[Action] = [SlotRecord.holders[from_task].remove(), SlotRecord.owners[from_task].remove(),
                             SlotRecord.holders[to_task].set(lease), SlotRecord.parked.add(-1)]
    if to_user is not None:
        actions.append(SlotRecord.owners[to_task].set(to_user))
    transaction.update(SlotRecord(model_id), actions=actions, return_values="ALL_OLD", condition=(
        SlotRecord.holders[from_task].exists() & SlotRecord.holders[to_task].does_not_exist()
        & (SlotRecord.count <= SlotRecord.limit) & cap & SlotRecord.circuit.does_not_exist()))
    roles = [(model_id, "model")]
    capped_to = user_cap is not None and to_user is not None
    if capped_to and released_user_slot and from_user == to_user:
        user_key = user_slot_key(model_id, to_user)  # type: ignore[arg-type]
        transaction.update(SlotRecord(user_key), actions=[SlotRecord.holders[from_task].remove(),
                                                          SlotRecord.holders[to_task].set(lease)],
                           return_values="ALL_OLD", condition=SlotRecord.holders[from_task].exists()
                           & SlotRecord.holders[to_task].does_not_exist()
                           & (SlotRecord.count <= int(user_cap)))  # type: ignore[arg-type]  # a cap lowered
        return [*roles, (user_key, "from_user")]
    if released_user_slot and from_user is not None:  # given back even when the model is no longer capped
        from_key = user_slot_key(model_id, from_user)
        transaction.update(SlotRecord(from_key), actions=[SlotRecord.holders[from_task].remove(),
                                                          SlotRecord.count.add(-1)],
                           return_values="ALL_OLD", condition=SlotRecord.holders[from_task].exists())
        roles.append((from_key, "from_user"))
    if capped_to:
        to_key = user_slot_key(model_id, to_user)  # type: ignore[arg-type]
        transaction.update(SlotRecord(to_key), return_values="ALL_OLD",
                           **_take_update(to_task, int(user_cap), lease, None))  # type: ignore[arg-type]
        roles.append((to_key, "to_user"))
    return roles


def take_queue_number(model_id: str) -> tuple[int, bool]:
    """The next number of the model's accepted tasks, and whether its slots were all taken at that moment (a new
    task then parks at once, in its intake's transaction, if they still are)."""
    record = SlotRecord(model_id)
    record.update(actions=[SlotRecord.accepted.add(1)])
    full = record.limit is not None and int(record.count or 0) >= int(record.limit)
    return int(record.accepted or 0), full


def user_cap_seen(model_id: str) -> int | None:
    """The model's `user_cap` as last seen here (a guess every write using it checks)."""
    return _user_cap_seen.get(model_id)


def record(model_id: str) -> SlotRecord:
    """The model's slot record as it is now (an empty one when it has none yet)."""
    try:
        return SlotRecord.get(model_id, consistent_read=True)
    except DoesNotExist:
        return SlotRecord(model_id)


def in_use(slot_key: str) -> int:
    """Slots held on a model's record (or, with `user_slot_key`, by one user of it)."""
    try:
        return int(SlotRecord.get(slot_key, consistent_read=True).count or 0)
    except DoesNotExist:
        return 0


@dataclass(frozen=True)
class SlotState:
    holders: dict[str, Holder]
    count: int
    limit: int | None
    user_cap: int | None
    parked: int
    # The circuit: None (closed), "open" or "half_open"; and from when a probe may go out of an open one.
    circuit: str | None = None
    circuit_retry_at: float | None = None


def state(model_id: str) -> SlotState:
    """The model's slot record as it is now (one consistent read)."""
    try:
        record = SlotRecord.get(model_id, consistent_read=True)
    except DoesNotExist:
        return SlotState({}, 0, None, None, 0)
    _user_cap_seen[model_id] = optional(record.user_cap)
    return SlotState(_holders_of(record), int(record.count or 0), optional(record.limit), optional(record.user_cap),
                     int(record.parked or 0), record.circuit, record.circuit_retry_at)


def optional(value: Any) -> int | None:
    return None if value is None else int(value)


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
    return _holders_of(record)


def _holders_of(record: SlotRecord) -> dict[str, Holder]:
    leases = record.holders.as_dict() if record.holders is not None else {}
    owners = record.owners.as_dict() if record.owners is not None else {}
    return {task: Holder(int(lease), owners.get(task)) for task, lease in leases.items()}
