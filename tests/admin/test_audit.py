"""The audit trail: every admin action and quota refund recorded with its actor, before and after (never a secret),
append-only, read newest first by actor and target a page at a time."""

from __future__ import annotations

import base64
import json
from typing import Any

from chalicelib.audit.trail import MAX_SIDE_BYTES, REDACTED, AuditTrail
from chalicelib.store import statemachine
from chalicelib.store.records import AuditRecord, TaskRecord
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import ADMIN, DEMO, IMAGE_TASK, VIDEO_MODEL

NEW_PASSWORD = "a-brand-new-password-1"


def audit(api: Api, query: str = "") -> Any:
    response = api.request("GET", f"/api/admin/audit{query}", as_user=ADMIN)
    assert response.status_code == 200, response.body
    return response.data


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.body
    return response.data


def test_each_admin_action_is_recorded_with_its_actor_before_and_after_and_no_secret(api: Api) -> None:
    spare = {"model_id": "spare", "type": "image", "concurrency": 1, "daily_quota": 10,
             "upstream_model": "doubao-seedream-4-5-251128"}
    ok(api.request("POST", "/api/admin/models", spare, as_user=ADMIN), 201)
    ok(api.request("PUT", "/api/admin/models/spare", {"concurrency": 2}, as_user=ADMIN))
    ok(api.request("DELETE", "/api/admin/models/spare", as_user=ADMIN))
    ok(api.request("POST", "/api/admin/users", {"username": "carol", "password": "carols-first-password"},
                   as_user=ADMIN), 201)
    ok(api.request("PUT", "/api/admin/users/carol", {"password": NEW_PASSWORD, "role": "admin"}, as_user=ADMIN))
    ok(api.request("DELETE", "/api/admin/users/carol", as_user=ADMIN))
    task_id = ok(api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO), 201)["id"]
    ok(api.request("PUT", f"/api/tasks/{task_id}/status",
                   {"status": "failed", "error": {"code": "stopped", "message": "by hand"}}, as_user=ADMIN))

    entries = audit(api)["entries"]

    # Newest first (two entries of one millisecond, such as an operator's change and the refund it caused, in
    # either order).
    assert [entry["at"] for entry in entries] == sorted((entry["at"] for entry in entries), reverse=True)
    assert sorted((entry["action"], entry["actor"], entry["target"]) for entry in entries) == sorted([
        ("task.status", "admin", f"task:{task_id}"),
        ("quota.refund", "system", f"task:{task_id}"),  # it never reached Ark: its quota came back
        ("user.delete", "admin", "user:carol"),
        ("user.update", "admin", "user:carol"),
        ("user.create", "admin", "user:carol"),
        ("model.delete", "admin", "model:spare"),
        ("model.update", "admin", "model:spare"),
        ("model.create", "admin", "model:spare"),
    ])
    by_action = {entry["action"]: entry for entry in entries}
    update = by_action["model.update"]
    assert (update["before"]["concurrency"], update["after"]["concurrency"]) == (1, 2)
    assert by_action["model.create"]["before"] is None and by_action["model.delete"]["after"] is None
    assert by_action["model.delete"]["before"]["model_id"] == "spare"
    user = by_action["user.update"]
    assert (user["before"]["role"], user["after"]["role"], user["after"]["password_changed"]) == ("user", "admin", True)
    status = by_action["task.status"]
    assert (status["before"]["status"], status["after"]["status"]) == ("queued", "failed")
    assert status["after"]["error"] == {"code": "stopped", "message": "by hand"}
    assert by_action["quota.refund"]["after"]["quota_refunded"] is True
    text = json.dumps(entries)
    assert NEW_PASSWORD not in text and "carols-first-password" not in text and "$argon2" not in text
    assert "password_hash" not in text


def test_pages_run_newest_first_through_an_opaque_cursor_and_filter_by_actor_and_target(api: Api) -> None:
    clock = FrozenClock(1_800_000_000)
    trail = AuditTrail(clock)
    for index in range(7):
        clock.advance(1)
        trail.record(actor="alice" if index % 2 else "bob", action="model.update",
                     target="model:a" if index < 4 else "model:b", before={"n": index - 1}, after={"n": index})

    seen: list[int] = []
    cursor, pages = "", 0
    while True:
        page = audit(api, f"?limit=3{cursor}")
        seen += [entry["after"]["n"] for entry in page["entries"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert (seen, pages) == ([6, 5, 4, 3, 2, 1, 0], 3)

    assert [entry["after"]["n"] for entry in audit(api, "?actor=alice")["entries"]] == [5, 3, 1]
    assert [entry["after"]["n"] for entry in audit(api, "?target=model:a")["entries"]] == [3, 2, 1, 0]
    both = audit(api, "?actor=bob&target=model:a&limit=1")
    assert [entry["after"]["n"] for entry in both["entries"]] == [2]
    rest = audit(api, f"?actor=bob&target=model:a&limit=1&cursor={both['next_cursor']}")
    assert [entry["after"]["n"] for entry in rest["entries"]] == [0]
    assert audit(api, "?actor=nobody") == {"entries": [], "next_cursor": None}

    forged = base64.urlsafe_b64encode(b"2026-01-01 OR 1=1").decode()
    for cursor in ("%%%", forged, "a" * 3000):
        refused = api.request("GET", f"/api/admin/audit?cursor={cursor}", as_user=ADMIN)
        assert refused.status_code == 400 and refused.data["error"]["code"] == "validation_error", cursor
    assert api.request("GET", "/api/admin/audit", as_user=DEMO).status_code == 403


def test_an_entry_is_bounded_and_redacted_and_a_refund_told_twice_is_one_entry(api: Api) -> None:
    trail = AuditTrail(FrozenClock(1_800_000_000))
    trail.record(actor="admin", action="model.update", target="model:big",
                 before={"defaults": {"prompt": "x" * 1_000_000}, "api_key": "ak_secret", "nested": {"token": "t"}},
                 after={"items": list(range(100_000)), "password_changed": True})
    trail.record(actor="admin", action="model.update", target="model:huge", before=None,
                 after={"huge": ["y" * 4000 for _ in range(200)]})  # 800 KB even with every field cut

    [entry] = audit(api, "?target=model:big")["entries"]
    for stored in AuditRecord.query("all"):
        assert len(json.dumps(stored.before)) + len(json.dumps(stored.after)) < 2 * MAX_SIDE_BYTES
    assert audit(api, "?target=model:huge")["entries"][0]["after"]["cut"] is True
    assert entry["before"]["defaults"]["prompt"].endswith("more characters cut]")
    assert entry["before"]["api_key"] == REDACTED and entry["before"]["nested"]["token"] == REDACTED
    assert entry["after"]["password_changed"] is True and entry["after"]["items"][-1] == "[99900 more items cut]"

    task_id = ok(api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO), 201)["id"]
    task = statemachine.transition(TaskRecord.get(task_id), statemachine.CANCELLED)
    assert task.quota_refunded
    trail.record_refund(task)  # told again (a repeated notification): the same entry, not a second one
    refunds = audit(api, f"?target=task:{task_id}")["entries"]
    assert [(entry["action"], entry["actor"]) for entry in refunds] == [("quota.refund", "system")]


def test_a_price_change_is_on_the_trail_with_its_amounts(api: Api) -> None:
    """A price is no secret: a video model's `per_million_tokens` is shown before and after, like any field."""
    for amount in (15.0, 20.0):
        ok(api.request("PUT", f"/api/admin/models/{VIDEO_MODEL}",
                       {"price": {"currency": "CNY", "per_million_tokens": amount}}, as_user=ADMIN))
    entries = audit(api, f"?target=model:{VIDEO_MODEL}")["entries"]
    latest = next(entry for entry in entries if entry["action"] == "model.update")
    assert latest["before"]["price"] == {"currency": "CNY", "per_million_tokens": 15.0}
    assert latest["after"]["price"] == {"currency": "CNY", "per_million_tokens": 20.0}
