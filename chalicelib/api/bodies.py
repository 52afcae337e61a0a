"""The bodies the API answers with, one function per resource: tasks (a user's view and an admin's), models (what
any user sees and what admins see) and accounts. WebSocket updates are cut from the task body (`chalicelib.live`).
Fields are described in docs/api.md."""

from __future__ import annotations

from typing import Any

from chalicelib import catalog
from chalicelib.ark import capabilities
from chalicelib.ark.capabilities import Provider
from chalicelib.ark.errors import error_shown
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.lanes.circuit import circuit_of
from chalicelib.media import storage
from chalicelib.metrics import figures
from chalicelib.store import slots
from chalicelib.store.rate_limit import DEFAULT_REQUESTS_PER_MINUTE
from chalicelib.store.records import ModelRecord, TaskRecord, UserRecord, optional_int
from chalicelib.tasks.cancel import is_cancellable
from chalicelib.tasks.queries import TaskQueries


class TaskBodies:
    """Task bodies with presigned URLs made at read time (so reading a task again gives fresh ones)."""

    def __init__(self, *, s3: Any, queries: TaskQueries, clock: Clock = SYSTEM_CLOCK) -> None:
        self.s3 = s3
        self.queries = queries
        self.clock = clock

    def admin_body(self, task: TaskRecord) -> dict[str, Any]:
        """What admins see of a task: its body with what Ark itself said about a failure, and its owner, by the
        username it was made under and by id."""
        return {**self.body(task, for_admin=True), "user": task.username or task.user_id, "user_id": task.user_id}

    def body(self, task: TaskRecord, *, with_queue_position: bool = False, for_admin: bool = False) -> dict[str, Any]:
        """The task as the API shows it; an admin's view adds what Ark itself said about its failure."""
        body: dict[str, Any] = {
            "id": task.task_id,
            "type": task.type,
            "model_id": task.model_id,
            "status": task.status,
            "version": int(task.version),
            "prompt": task.prompt,
            "images": [storage.display_url(self.s3, ref) for ref in task.images or []],
            "references": [{"type": ref["type"], "url": storage.display_url(self.s3, ref["url"])}
                           for ref in task.references or []],
            "params": task.params or {},
            "render_of": task.render_of,
            "warnings": task.warnings or [],
            "external_id": task.external_id,
            "error": error_shown(task.error.as_dict() if task.error else None, to_admin=for_admin),
            "result_urls": [storage.display_url(self.s3, ref) for ref in task.result_urls or []],
            "image_errors": [error_shown(error, to_admin=for_admin) for error in task.image_errors or []],
            "video_url": storage.display_url(self.s3, task.video_url) if task.video_url else None,
            "last_frame_url": storage.display_url(self.s3, task.last_frame_url) if task.last_frame_url else None,
            "result": task.result_meta or None,
            "usage": task.usage or None,
            "cost": None if task.cost is None else float(task.cost),
            "currency": task.currency if task.cost is not None else None,
            "results_copy_error": task.results_copy_error.as_dict() if task.results_copy_error else None,
            "created_at": task.created_at,
            "updated_at": task.updated_at,
            "started_at": task.started_at,
            "finished_at": task.finished_at,
            "cancellable": is_cancellable(task),
            "webhook_url": task.webhook_url,
            "webhook_events": task.webhook_events if task.webhook_url else None,
        }
        if with_queue_position:
            body["queue_position"] = self.queries.queue_position(task)
        # From the model's recent figures, cached per container (`chalicelib.metrics.figures`).
        body.update({"eta_s": None, "progress": None,
                     **figures.estimates(task, body.get("queue_position"), self.clock.now())})
        return body



def public_model_body(model: ModelRecord) -> dict[str, Any]:
    """What any logged-in user sees: no upstream IDs, no limits; what the model takes (`capabilities`) and where
    it is in its lifecycle."""
    status = catalog.status_of(model)
    return {
        "model_id": model.model_id,
        "type": model.type,
        "display_name": model.display_name,
        "enabled": model.enabled,
        "defaults": model.defaults or {},
        "status": status.status,
        "replacement": status.replacement,
        "warnings": catalog.warnings_of(model),
        "capabilities": catalog.client_capabilities(model),
    }


def admin_model_body(model: ModelRecord, now: float, timezone: str) -> dict[str, Any]:
    slot_record = slots.record(model.model_id)  # one read: slots in use and the circuit
    return {
        **public_model_body(model),
        "upstream_model": model.upstream_model,
        "family": (entry.key if (entry := catalog.ark_model_of(model)) else None),
        "status_note": catalog.status_of(model).note,
        "upstream_unavailable": model.upstream_unavailable,
        "concurrency": int(model.concurrency),
        "daily_quota": int(model.daily_quota),
        "user_daily_quota": optional_int(model.user_daily_quota),
        "max_running_per_user": optional_int(model.max_running_per_user),
        "lane": model.lane,
        "price": model.price,
        "created_at": model.created_at,
        "updated_at": model.updated_at,
        "usage_today": catalog.usage_today(model, now, timezone),
        "slots_in_use": int(slot_record.count or 0),
        "circuit": circuit_of(model, slot_record),
    }


def ark_model_bodies(provider: Provider) -> list[dict[str, Any]]:
    """The capability table as admins see it (`GET /api/admin/ark-models`): what each upstream may name."""
    bodies = []
    for entry in capabilities.MODELS:
        status = capabilities.lifecycle(entry, provider)
        limits = ({"requests_per_minute": entry.video.requests_per_minute, "concurrency": entry.video.concurrency}
                  if entry.video else {"images_per_minute": entry.image.images_per_minute} if entry.image else {})
        bodies.append({
            "family": entry.key,
            "display_name": entry.display_name,
            "type": entry.api,
            "ids": {name: {"model": at.model_id, "aliases": list(at.aliases), "status": at.status,
                           "replacement": at.replacement} for name, at in entry.providers.items()},
            "status": status.status,
            "replacement": status.replacement,
            "status_note": status.note,
            "limits": limits,
            "capabilities": capabilities.client_capabilities(entry),
        })
    return bodies


def user_body(user: UserRecord) -> dict[str, Any]:
    return {
        "username": user.username,
        "user_id": user.user_id,
        "role": user.role,
        "disabled": user.disabled,
        "requests_per_minute": optional_int(user.requests_per_minute) or DEFAULT_REQUESTS_PER_MINUTE,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }
