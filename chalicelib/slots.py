"""The per-model slot semaphore: the exact, live cap on calls in flight at Ark.

One record per model holds `holders` (task id -> lease expiry, epoch seconds) and `count`. Acquire is a
conditional update (`count < concurrency` and the task not already holding), release is conditional and
idempotent, and `reclaim_expired` frees leases of workers that died mid-call.
"""

from __future__ import annotations

import contextlib

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib.db import SlotRecord


def _ensure_record(model_id: str) -> None:
    with contextlib.suppress(PutError):  # another caller created it first
        SlotRecord(model_id, holders={}, count=0).save(condition=SlotRecord.model_id.does_not_exist())


def acquire(model_id: str, task_id: str, concurrency: int, lease_until: float) -> bool:
    """Take a slot for `task_id`; True when it holds one (also when it already did). Never waits."""
    for _ in range(2):
        try:
            SlotRecord(model_id).update(
                actions=[SlotRecord.holders[task_id].set(int(lease_until)), SlotRecord.count.add(1)],
                condition=(SlotRecord.holders[task_id].does_not_exist() & (SlotRecord.count < concurrency)),
            )
            return True
        except UpdateError:
            try:
                record = SlotRecord.get(model_id, consistent_read=True)
            except DoesNotExist:
                _ensure_record(model_id)  # first acquire for this model
                continue
            return task_id in _holders_of(record)
    return False


def holds(model_id: str, task_id: str) -> bool:
    return task_id in holders(model_id)


def release(model_id: str, task_id: str) -> bool:
    """Give the slot back; True when this call released it, False when it was not held (idempotent)."""
    try:
        SlotRecord(model_id).update(
            actions=[SlotRecord.holders[task_id].remove(), SlotRecord.count.add(-1)],
            condition=SlotRecord.holders[task_id].exists(),
        )
    except UpdateError:
        return False
    return True


def extend(model_id: str, task_id: str, lease_until: float) -> bool:
    try:
        SlotRecord(model_id).update(
            actions=[SlotRecord.holders[task_id].set(int(lease_until))],
            condition=SlotRecord.holders[task_id].exists(),
        )
    except UpdateError:
        return False
    return True


def in_use(model_id: str) -> int:
    try:
        return int(SlotRecord.get(model_id, consistent_read=True).count or 0)
    except DoesNotExist:
        return 0


def _holders_of(record: SlotRecord) -> dict[str, int]:
    raw = record.holders.as_dict() if record.holders is not None else {}
    return {task: int(lease) for task, lease in raw.items()}


def holders(model_id: str) -> dict[str, int]:
    try:
        return _holders_of(SlotRecord.get(model_id, consistent_read=True))
    except DoesNotExist:
        return {}


def expired_holders(model_id: str, now: float) -> list[str]:
    return [task for task, lease in holders(model_id).items() if lease < now]
