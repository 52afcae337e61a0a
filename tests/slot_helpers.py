"""Slots held by tests under limits they name, as a model configured with them would hold them."""

from __future__ import annotations

from chalicelib.store import slots


def hold_slot(model_id: str, task_id: str, concurrency: int, lease_until: float, *, user_id: str | None = None,
              user_cap: int | None = None) -> bool:
    """Write the limits on the model's slot record (as a model change does), then acquire; True when it holds."""
    slots.configure(model_id, concurrency, user_cap)
    return isinstance(slots.try_acquire(model_id, task_id, lease_until, user_id=user_id), slots.Held)
