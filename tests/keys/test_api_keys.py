"""API keys: made, listed and revoked by their owner; what they reach; when they stop working."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.accounts import keys
from chalicelib.store.records import ApiKeyRecord, UserRecord
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import ADMIN, DEMO, IMAGE_TASK, OTHER
from tests.keys.conftest import new_key

pytestmark = pytest.mark.abuse

LISTED_FIELDS = {"id", "name", "scopes", "prefix", "created_at", "last_used_at", "expires_at"}
MISSING_TASK = "tsk_" + "a" * 26


def stored_items() -> list[dict[str, Any]]:
    return [record.attribute_values for record in ApiKeyRecord.scan()]


def test_a_key_is_shown_once_and_only_its_hash_is_stored(api: Api) -> None:
    created = new_key(api, DEMO, name="backend")
    assert set(created) == {"id", "key", "name", "scopes", "created_at", "expires_at"}
    key = created["key"]
    assert key.startswith("ak_") and len(key) == 3 + 43  # 32 random bytes
    assert (created["name"], created["scopes"], created["expires_at"]) == ("backend", ["tasks:read", "tasks:write"],
                                                                           None)

    digest = hashlib.sha256(key.encode()).hexdigest()
    listed = api.request("GET", "/api/keys", as_user=DEMO)
    assert listed.status_code == 200
    assert [set(entry) for entry in listed.data["keys"]] == [LISTED_FIELDS]
    (entry,) = listed.data["keys"]
    assert (entry["id"], entry["prefix"], entry["last_used_at"]) == (created["id"], key[:9], None)
    assert key not in listed.body.decode() and digest not in listed.body.decode()
    assert key[9:20] not in listed.body.decode()
    # The table holds the hash, never the key; no other answer ever shows the key again.
    assert [item["key_hash"] for item in stored_items()] == [digest]
    assert key not in json.dumps(stored_items())
    for path in ("/api/users/me", "/api/keys"):
        assert key not in api.request("GET", path, as_user=DEMO).body.decode()


def test_a_key_acts_for_its_owner_on_task_routes_until_it_is_revoked(api: Api) -> None:
    created = new_key(api, DEMO)
    key = created["key"]
    task = api.request("POST", "/api/tasks", IMAGE_TASK, token=key)
    assert task.status_code == 201, task.body
    assert [listed["id"] for listed in api.request("GET", "/api/tasks", token=key).data["tasks"]] == [task.data["id"]]
    assert api.request("GET", "/api/users/me", token=key).data["username"] == "demo"
    # What the session sees is the same account's.
    assert [listed["id"] for listed in api.request("GET", "/api/tasks", as_user=DEMO).data["tasks"]] == \
        [task.data["id"]]

    revoked = api.request("DELETE", f"/api/keys/{created['id']}", as_user=DEMO)
    assert (revoked.status_code, revoked.data) == (200, {"deleted": created["id"]})
    after = api.request("GET", f"/api/tasks/{task.data['id']}", token=key)
    assert (after.status_code, after.data["error"]["code"]) == (401, "invalid_api_key")
    assert api.request("GET", "/api/keys", as_user=DEMO).data["keys"] == []
    assert stored_items() == []
    assert not UserRecord.get("demo").api_key_hashes
    again = api.request("DELETE", f"/api/keys/{created['id']}", as_user=DEMO)
    assert (again.status_code, again.data["error"]["code"]) == (404, "key_not_found")


def test_another_users_key_id_is_not_found_and_the_key_keeps_working(api: Api) -> None:
    """Safeguard: revoking and listing read the caller's own account's keys only."""
    demo_key = new_key(api, DEMO)
    new_key(api, OTHER)
    unknown = "key_" + "a" * 26
    answers = [api.request("DELETE", f"/api/keys/{key_id}", as_user=user)
               for key_id, user in ((demo_key["id"], OTHER), (demo_key["id"], ADMIN), (unknown, OTHER))]
    assert [(answer.status_code, answer.data["error"]["code"]) for answer in answers] == [(404, "key_not_found")] * 3
    assert answers[0].data == answers[2].data
    assert api.request("DELETE", "/api/keys/not-a-key-id", as_user=DEMO).status_code == 404
    assert [entry["id"] for entry in api.request("GET", "/api/keys", as_user=DEMO).data["keys"]] == [demo_key["id"]]
    assert demo_key["id"] not in api.request("GET", "/api/keys", as_user=OTHER).body.decode()
    assert api.request("GET", "/api/tasks", token=demo_key["key"]).status_code == 200


# --- what a key reaches ------------------------------------------------------------------------------------------

PUBLIC = "public"
# Every route of the app and what an API key needs there (None: no key is ever let in). A route added to the app
# fails `test_every_route_is_classified` until it is listed here, with the scope it declares.
ROUTE_SCOPES: dict[tuple[str, str], str | None] = {
    ("/api/health", "GET"): PUBLIC,
    ("/api/users/login", "POST"): PUBLIC,
    ("/api/queue/callback", "POST"): PUBLIC,
    ("/api/openapi.json", "GET"): PUBLIC,
    ("/api/users/logout", "POST"): None,
    ("/api/users/me", "GET"): "tasks:read",
    ("/api/keys", "GET"): None,
    ("/api/keys", "POST"): None,
    ("/api/keys/{key_id}", "DELETE"): None,
    ("/api/ws/ticket", "POST"): None,
    ("/api/models", "GET"): "tasks:read",
    ("/api/tasks", "GET"): "tasks:read",
    ("/api/tasks/{task_id}", "GET"): "tasks:read",
    ("/api/tasks", "POST"): "tasks:write",
    ("/api/tasks/{task_id}/render", "POST"): "tasks:write",
    ("/api/tasks/{task_id}/cancel", "POST"): "tasks:write",
    ("/api/tasks/{task_id}", "DELETE"): "tasks:write",
    ("/api/uploads", "POST"): "tasks:write",
    ("/api/tasks/{task_id}/status", "PUT"): None,
    ("/api/admin/users", "GET"): None,
    ("/api/admin/users", "POST"): None,
    ("/api/admin/users/{username}", "PUT"): None,
    ("/api/admin/users/{username}", "DELETE"): None,
    ("/api/admin/models", "GET"): None,
    ("/api/admin/metrics", "GET"): None,
    ("/api/admin/usage", "GET"): None,
    ("/api/admin/models", "POST"): None,
    ("/api/admin/ark-models", "GET"): None,
    ("/api/admin/models/{model_id}", "GET"): None,
    ("/api/admin/models/{model_id}", "PUT"): None,
    ("/api/admin/models/{model_id}", "DELETE"): None,
    ("/api/admin/models/{model_id}/circuit/close", "POST"): None,
    ("/api/admin/tasks", "GET"): None,
    ("/api/admin/dlq", "GET"): None,
    ("/api/admin/dlq/{lane}/replay", "POST"): None,
    ("/api/admin/audit", "GET"): None,
    ("/api/webhooks/secret", "GET"): None,
    ("/api/webhooks/secret/rotate", "POST"): None,
    ("/api/webhooks/deliveries", "GET"): "tasks:read",
}


def app_routes() -> set[tuple[str, str]]:
    from app import app

    return {(path, method) for path, methods in app.routes.items() for method in methods if method != "OPTIONS"}


def concrete(path: str) -> str:
    values = {"{task_id}": MISSING_TASK, "{model_id}": "seedream-4.5", "{username}": "other",
              "{key_id}": "key_" + "a" * 26, "{lane}": "image"}
    for name, value in values.items():
        path = path.replace(name, value)
    return path


def test_every_route_is_classified() -> None:
    from app import http

    assert app_routes() == set(ROUTE_SCOPES)
    assert {route: scope for route, scope in http.scopes.items() if scope} == \
        {route: scope for route, scope in ROUTE_SCOPES.items() if scope not in (None, PUBLIC)}


@pytest.mark.parametrize(("path", "method"), sorted(route for route, scope in ROUTE_SCOPES.items()
                                                    if scope != PUBLIC))
def test_each_route_lets_in_only_keys_with_its_scope(api: Api, path: str, method: str) -> None:
    """Safeguard: `Http.route(..., scope=)`: a key reaches a user route that names a scope, with that scope (write
    implies read); every other route (admin, key management, sessions, WebSocket tickets, the operator's) refuses
    every key, an admin's included, with 403 before anything is read or changed."""
    scope = ROUTE_SCOPES[(path, method)]
    keys_of = {"read-only": new_key(api, DEMO, scopes=["tasks:read"])["key"],
               "write-only": new_key(api, DEMO, scopes=["tasks:write"])["key"],
               "full": new_key(api, DEMO)["key"],
               "admin's full": new_key(api, ADMIN)["key"]}
    body = {"status": "failed"} if method == "PUT" else {}
    before = admin_view(api)
    for name, key in keys_of.items():
        response = api.request(method, concrete(path), body, token=key)
        lets_in = scope is not None and (scope == "tasks:read" or name != "read-only")
        if lets_in:
            assert response.status_code not in (401, 403), (name, response.body)
        else:
            expected = "insufficient_scope" if scope is not None else "api_key_not_allowed"
            assert (response.status_code, response.data["error"]["code"]) == (403, expected), name
    # Nothing a refused key asked for happened: users, models and keys are as they were.
    assert admin_view(api) == before


def admin_view(api: Api) -> list[Any]:
    keys_held = [(entry["id"], entry["scopes"]) for entry in api.request("GET", "/api/keys", as_user=DEMO).data["keys"]]
    return [api.request("GET", "/api/admin/users", as_user=ADMIN).data,
            api.request("GET", "/api/admin/models", as_user=ADMIN).data, keys_held]


def test_an_admins_key_has_no_admin_power_on_task_routes(api: Api) -> None:
    """Safeguard: `Principal.is_admin` is false with a key, so deleting a task is the owner's only."""
    task_id = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).data["id"]
    ended = api.request("PUT", f"/api/tasks/{task_id}/status", {"status": "failed"}, as_user=ADMIN)
    assert ended.status_code == 200, ended.body
    admin_key = new_key(api, ADMIN)["key"]
    for method, path in (("DELETE", ""), ("GET", ""), ("POST", "/cancel")):
        assert api.request(method, f"/api/tasks/{task_id}{path}", token=admin_key).status_code == 404
    assert api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data["status"] == "failed"
    assert api.request("DELETE", f"/api/tasks/{task_id}", as_user=ADMIN).status_code == 200  # a session may


def test_logging_out_with_a_key_is_refused_and_ends_nothing(api: Api) -> None:
    key = new_key(api, DEMO)["key"]
    response = api.request("POST", "/api/users/logout", token=key)
    assert (response.status_code, response.data["error"]["code"]) == (403, "api_key_not_allowed")
    assert api.request("GET", "/api/users/me", token=key).status_code == 200
    assert api.request("GET", "/api/users/me", as_user=DEMO).status_code == 200


# --- when a key stops working -------------------------------------------------------------------------------------


def test_a_disabled_users_keys_are_refused_until_enabled_again(api: Api) -> None:
    key = new_key(api, DEMO)["key"]
    assert api.request("PUT", "/api/admin/users/demo", {"disabled": True}, as_user=ADMIN).status_code == 200
    refused = api.request("GET", "/api/tasks", token=key)
    assert (refused.status_code, refused.data["error"]["code"]) == (401, "invalid_api_key")
    assert api.request("POST", "/api/tasks", IMAGE_TASK, token=key).status_code == 401
    assert api.request("PUT", "/api/admin/users/demo", {"disabled": False}, as_user=ADMIN).status_code == 200
    assert api.request("GET", "/api/tasks", token=key).status_code == 200


def test_a_deleted_users_keys_stay_dead_when_the_name_is_used_again(api: Api) -> None:
    """Safeguard: a key names its account's user id, which a new account with the name never gets, and the new
    account's record lists none of the old one's keys."""
    key = new_key(api, DEMO)["key"]
    (item,) = stored_items()
    digest = item["key_hash"]
    assert api.request("DELETE", "/api/admin/users/demo", as_user=ADMIN).status_code == 200
    assert api.request("GET", "/api/tasks", token=key).status_code == 401
    assert api.request("POST", "/api/admin/users", {"username": "demo", "password": DEMO[1]},
                       as_user=ADMIN).status_code == 201
    api.tokens.pop("demo")
    refused = api.request("GET", "/api/users/me", token=key)
    assert (refused.status_code, refused.data["error"]["code"]) == (401, "invalid_api_key")
    assert api.request("GET", "/api/keys", as_user=DEMO).data["keys"] == []
    assert stored_items() == []  # the deleted account's keys went with it

    # Even were the old key's item and hash put back (a restored backup), the key names the old account's id.
    ApiKeyRecord(**item).save()
    UserRecord("demo").update(actions=[UserRecord.api_key_hashes.add({digest})])
    assert api.request("GET", "/api/users/me", token=key).status_code == 401


def test_a_key_whose_hash_its_account_no_longer_lists_is_refused(api: Api) -> None:
    """Safeguard: the account's record is checked too, not only the key's item (the same account by id)."""
    key = new_key(api, DEMO)["key"]
    UserRecord("demo").update(actions=[UserRecord.api_key_hashes.remove()])
    assert api.request("GET", "/api/tasks", token=key).status_code == 401


def test_a_key_expires_at_its_expiry(api: Api, clock: FrozenClock) -> None:
    created = new_key(api, DEMO, expires_in_days=2)
    forever = new_key(api, DEMO)
    (listed, _) = sorted(api.request("GET", "/api/keys", as_user=DEMO).data["keys"],
                         key=lambda entry: entry["expires_at"] is None)
    assert listed["expires_at"] == created["expires_at"] and created["expires_at"].endswith("Z")

    clock.advance(2 * 86400 - 1)
    assert api.request("GET", "/api/tasks", token=created["key"]).status_code == 200
    clock.advance(1)
    expired = api.request("GET", "/api/tasks", token=created["key"])
    assert (expired.status_code, expired.data["error"]["code"]) == (401, "invalid_api_key")
    clock.advance(3650 * 86400)
    assert api.request("GET", "/api/tasks", token=forever["key"]).status_code == 200


@pytest.mark.parametrize("header", [
    "Bearer ak_", "Bearer ak_" + "x" * 42, "Bearer ak_" + "x" * 44, "Bearer ak_" + "!" * 43,
    "Bearer ak_" + "x" * 5000, "Bearer ak_" + "A" * 43,
])
def test_malformed_and_unknown_keys_are_refused(api: Api, header: str) -> None:
    response = api.client.http.get("/api/tasks", headers={"Authorization": header})
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "invalid_api_key"


def test_last_used_is_written_at_most_once_a_minute(api: Api, clock: FrozenClock,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.client import BaseClient

    created = new_key(api, DEMO)
    writes: list[str] = []
    real_call = BaseClient._make_api_call

    def counting(client: Any, operation: str, params: dict) -> Any:
        if operation == "UpdateItem" and "api-keys" in params.get("TableName", ""):
            writes.append(operation)
        return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)

    def last_used() -> str | None:
        return api.request("GET", "/api/keys", as_user=DEMO).data["keys"][0]["last_used_at"]

    for _ in range(5):
        assert api.request("GET", "/api/tasks", token=created["key"]).status_code == 200
        clock.advance(10)
    assert len(writes) == 1
    first = last_used()
    assert first is not None
    clock.advance(20)  # 70 s after the first use
    api.request("GET", "/api/tasks", token=created["key"])
    assert len(writes) == 2 and last_used() > first


def test_a_use_racing_a_revoke_does_not_bring_the_key_back(api: Api) -> None:
    """Safeguard: the `last_used_at` update is conditioned on the key's item still being there."""
    created = new_key(api, DEMO)
    record = ApiKeyRecord.get(hashlib.sha256(created["key"].encode()).hexdigest())
    api.request("DELETE", f"/api/keys/{created['id']}", as_user=DEMO)
    keys.ApiKeys._note_use(record, 2_000_000_000.0)
    assert stored_items() == []


# --- bad input and the bound on keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "line\nbreak"}, "name"),
    ({"name": 5}, "name"),
    # Printable means what listings can show as it is: no C1 control, no bidi override (which would show
    # "a\u202egpj.exe" as "aexe.jpg"), no line separator, nothing invisible.
    ({"name": "c\x85i"}, "name"),
    ({"name": "a\u202egpj.exe"}, "name"),
    ({"name": "a\u2028b"}, "name"),
    ({"name": "\u200b"}, "name"),
    ({"name": "ci", "scopes": []}, "scopes"),
    ({"name": "ci", "scopes": ["admin"]}, "scopes[0]"),
    ({"name": "ci", "scopes": "tasks:read"}, "scopes"),
    ({"name": "ci", "scopes": ["tasks:read"] * 9}, "scopes"),
    ({"name": "ci", "expires_in_days": 0}, "expires_in_days"),
    ({"name": "ci", "expires_in_days": 3651}, "expires_in_days"),
    ({"name": "ci", "expires_in_days": "30"}, "expires_in_days"),
    ({"name": "ci", "expires_in_days": True}, "expires_in_days"),
    ({"name": "ci", "key": "ak_" + "a" * 43}, "key"),
    ({"name": "ci", "user_id": "usr_" + "a" * 26}, "user_id"),
])
def test_bad_key_requests_are_refused_with_the_field_named(api: Api, body: dict, field: str) -> None:
    response = api.request("POST", "/api/keys", body, as_user=DEMO)
    assert (response.status_code, response.data["error"]["code"]) == (400, "validation_error")
    assert [detail["field"] for detail in response.data["error"]["details"]] == [field]
    assert stored_items() == []


def test_a_name_in_any_script_is_kept_as_given(api: Api) -> None:
    assert new_key(api, DEMO, name="  Übersetzer 翻訳 🚀 backend  ")["name"] == "Übersetzer 翻訳 🚀 backend"


def test_scopes_are_kept_once_each(api: Api) -> None:
    created = new_key(api, DEMO, scopes=["tasks:write", "tasks:read", "tasks:write"])
    assert created["scopes"] == ["tasks:read", "tasks:write"]


def test_an_account_holds_a_bounded_number_of_keys(api: Api) -> None:
    made = [new_key(api, DEMO, name=f"key {number}") for number in range(keys.MAX_KEYS_PER_USER)]
    refused = api.request("POST", "/api/keys", {"name": "one more"}, as_user=DEMO)
    assert (refused.status_code, refused.data["error"]["code"]) == (409, "key_limit_reached")
    assert refused.data["error"]["details"] == {"max_keys": keys.MAX_KEYS_PER_USER}
    assert new_key(api, OTHER)  # per account
    assert api.request("DELETE", f"/api/keys/{made[0]['id']}", as_user=DEMO).status_code == 200
    assert new_key(api, DEMO, name="one more")
    listed = api.request("GET", "/api/keys", as_user=DEMO).data["keys"]
    assert len(listed) == keys.MAX_KEYS_PER_USER and listed[0]["name"] == "one more"  # newest first


@pytest.mark.usefixtures("one_call_at_a_time")
def test_parallel_creations_cannot_pass_the_bound_on_keys(api: Api) -> None:
    """Safeguard: the account's record gains the key's hash in the key's own transaction, on the condition that
    it holds fewer than the bound."""
    from chalicelib import wiring
    from chalicelib.schemas import KeyCreate
    from tests.factories import principal_of

    demo, service = principal_of(DEMO), wiring.current().api_keys
    attempts = keys.MAX_KEYS_PER_USER + 10

    def create(number: int) -> int:
        try:
            service.create(demo, KeyCreate(name=f"parallel {number}"))
        except keys.Conflict:
            return 409
        return 201

    with ThreadPoolExecutor(attempts) as pool:
        codes = sorted(pool.map(create, range(attempts)))
    assert codes == [201] * keys.MAX_KEYS_PER_USER + [409] * 10
    assert len(stored_items()) == keys.MAX_KEYS_PER_USER == len(UserRecord.get("demo").api_key_hashes)
