"""No one gets in: other users' tasks, routes without a token, server-owned fields, hostile bodies."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from chalicelib import aws, wiring
from chalicelib.clock import SYSTEM_CLOCK
from chalicelib.live import Connections, LiveUpdates
from chalicelib.settings import get_settings
from chalicelib.store import quota, statemachine
from chalicelib.store.records import ConnectionRecord, TaskRecord
from tests.api_client import Api
from tests.factories import ADMIN, DEMO, IMAGE_TASK, OTHER, png_data_uri, user_id_of

pytestmark = pytest.mark.abuse

PUBLIC_ROUTES = {("/api/health", "GET"), ("/api/users/login", "POST"), ("/api/queue/callback", "POST"),
                 ("/api/openapi.json", "GET")}


class RecordingManagementApi:
    """API Gateway's `@connections` as the publisher sees it, keeping every post."""

    class exceptions:
        class GoneException(Exception):
            pass

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def post_to_connection(self, ConnectionId: str, Data: bytes) -> None:
        self.posts.append((ConnectionId, json.loads(Data)))


def create(api: Api, body: dict[str, Any], user: tuple[str, str] = DEMO) -> Any:
    return api.request("POST", "/api/tasks", body, as_user=user)


def not_found_shape(response: Any, task_id: str) -> dict[str, Any]:
    return {**response.data["error"], "message": response.data["error"]["message"].replace(task_id, "<id>")}


def test_another_users_task_is_invisible_to_every_route_and_to_their_websocket(api: Api) -> None:
    """Safeguards: `get_own` answers 404 for a task of someone else exactly as for one that does not exist
    (read, cancel, delete, listing and the result URLs those carry); updates go only to the owner's sockets."""
    gateway = RecordingManagementApi()
    settings = dataclasses.replace(get_settings(), websocket_management_url="http://gateway.invalid")
    publisher = LiveUpdates(wiring.current().bodies, settings=settings,
                            client_for=lambda _: gateway)
    Connections().open("demo-socket=", user_id_of(DEMO[0]))
    Connections().open("other-socket=", user_id_of(OTHER[0]))
    statemachine.listeners.append(publisher.publish)
    try:
        task_id = create(api, {**IMAGE_TASK, "images": [png_data_uri()]}).data["id"]
        # As a lane worker ends it: succeeded, with its images copied into the bucket.
        running = statemachine.transition(TaskRecord.get(task_id), statemachine.RUNNING)
        stored = [f"s3://{settings.media_bucket}/tasks/{task_id}/results/0.png"]
        statemachine.transition(running, statemachine.SUCCEEDED, actions=[TaskRecord.result_urls.set(stored)])
        missing = "tsk_" + "a" * 26

        answers = {
            "read": api.request("GET", f"/api/tasks/{task_id}", as_user=OTHER),
            "cancel": api.request("POST", f"/api/tasks/{task_id}/cancel", as_user=OTHER),
            "delete": api.request("DELETE", f"/api/tasks/{task_id}", as_user=OTHER),
        }
        for name, response in answers.items():
            method, path = {"read": ("GET", ""), "cancel": ("POST", "/cancel"), "delete": ("DELETE", "")}[name]
            nobody = api.request(method, f"/api/tasks/{missing}{path}", as_user=OTHER)
            assert response.status_code == nobody.status_code == 404, name
            assert not_found_shape(response, task_id) == not_found_shape(nobody, missing), name
            assert "s3" not in response.body.decode() and "http" not in response.body.decode(), name
        assert api.request("PUT", f"/api/tasks/{task_id}/status", {"status": "failed"}, as_user=OTHER).status_code \
            == 403
        assert api.request("GET", "/api/tasks", as_user=OTHER).data["tasks"] == []
    finally:
        statemachine.listeners.remove(publisher.publish)

    owner_view = api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data
    assert owner_view["status"] == "succeeded" and owner_view["result_urls"]  # untouched by the attempts
    assert {connection for connection, _ in gateway.posts} == {"demo-socket="}
    assert [message["data"]["status"] for _, message in gateway.posts] == ["queued", "running", "succeeded"]


def test_every_route_but_login_health_the_callback_and_the_document_needs_a_token(api: Api) -> None:
    """Safeguard: every route is wrapped by `Http.endpoint` with a non-public access level; listed from the
    app's own route table, so a route added without one fails here."""
    from app import app

    checked = 0
    for path, methods in app.routes.items():
        for method in methods:
            if method == "OPTIONS" or (path, method) in PUBLIC_ROUTES:
                continue
            concrete = path.replace("{model_id}", "seedream-4.5").replace("{username}", "demo")
            concrete = concrete.replace("{task_id}", "tsk_" + "a" * 26)
            response = api.request(method, concrete, {})
            assert response.status_code == 401, (method, path)
            assert response.data["error"]["code"] == "unauthorized", (method, path)
            checked += 1
    assert checked >= 20


SERVER_OWNED_TASK_FIELDS = {
    "status": "succeeded", "user_id": "admin", "external_id": "cgt-1", "version": 99, "created_at": "2020-01-01",
    "ark_called": True, "quota_keys": [], "callback_secret_hash": "0" * 64, "lane": "video",
    "upstream_model": "doubao-seedream-4-0-250828", "result_urls": ["https://evil.example/x.png"],
}


def test_server_owned_fields_in_a_task_or_its_params_are_refused_and_nothing_is_written(api: Api) -> None:
    """Safeguard: task bodies are pydantic models with `extra="forbid"` at every level; the refusal comes
    before any write, so no task, no message and no quota is used."""
    video = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "waves", "params": {"duration": 5}}
    refused = [({**IMAGE_TASK, **SERVER_OWNED_TASK_FIELDS}, set(SERVER_OWNED_TASK_FIELDS)),
               ({**video, "params": {"duration": 5, "status": "succeeded", "external_id": "cgt-2"}},
                {"params.status", "params.external_id"})]

    for body, fields in refused:
        response = create(api, body)
        assert response.status_code == 400 and response.data["error"]["code"] == "validation_error"
        assert {detail["field"] for detail in response.data["error"]["details"]} == fields

    assert api.request("GET", "/api/admin/tasks", as_user=ADMIN).data["tasks"] == []
    day = quota.quota_day(SYSTEM_CLOCK.now(), get_settings().quota_timezone)
    assert quota.used(quota.model_counter_key("seedream-4.5", day)) == 0
    url = aws.sqs().get_queue_url(QueueName="arkflow-test-lane-image")["QueueUrl"]
    assert "Messages" not in aws.sqs().receive_message(QueueUrl=url)


@pytest.mark.parametrize("owned", [{"usage_today": {"used": 0}}, {"slots_in_use": 0}, {"created_at": "2020-01-01"},
                                   {"updated_at": "2020-01-01"}])
def test_server_owned_fields_in_a_new_model_are_refused_and_nothing_is_written(api: Api, owned: dict) -> None:
    """Safeguard: `ModelCreate` forbids extra fields (updates are covered by test_tasks_api)."""
    body = {"model_id": "sneaky", "type": "image", "upstream_model": "doubao-seedream-4-5-251128",
            "concurrency": 2, "daily_quota": 10, **owned}
    response = api.request("POST", "/api/admin/models", body, as_user=ADMIN)
    assert response.status_code == 400
    assert [detail["field"] for detail in response.data["error"]["details"]] == list(owned)
    assert api.request("GET", "/api/admin/models/sneaky", as_user=ADMIN).status_code == 404


def test_hostile_task_bodies_are_refused_with_every_bad_field_named(api: Api) -> None:
    """Safeguard: the route validates the whole body before doing anything and names each bad field."""
    png = png_data_uri()
    cases = {
        "images[0]": {**IMAGE_TASK, "images": ["data:image/png;base64,iVBO*w0KGgo="]},  # bad base64
        "images[1]": {**IMAGE_TASK, "images": [png, "data:image/png;base64," + base64.b64encode(b"GIF89a").decode()]},
        "images": {**IMAGE_TASK, "images": [png] * 15},
        "prompt": {**IMAGE_TASK, "prompt": "x" * 100_000},
        "size": {**IMAGE_TASK, "size": "9" * 5000 + "x1"},
        "params.duration": {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "w",
                            "params": {"duration": 10**12}},
        "params.frames": {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "w", "params": {"frames": -1}},
        "params.seed": {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "w", "params": {"seed": 2**64}},
    }
    for field, body in cases.items():
        response = create(api, body)
        assert response.status_code == 400, field
        assert response.data["error"]["code"] == "validation_error", field
        assert [detail["field"] for detail in response.data["error"]["details"]] == [field]
        assert "x" * 100 not in response.body.decode() and "9" * 100 not in response.body.decode()
    assert api.request("GET", "/api/tasks", as_user=DEMO).data["tasks"] == []


# --- accounts: a name used again, ended sessions and their sockets -------------------------------------------


def test_a_new_account_with_a_deleted_users_name_inherits_nothing(api: Api) -> None:
    """Safeguard: tasks, quota counters, idempotency keys and uploads belong to the account's user id, which a
    new account with the same name never gets."""
    api.request("PUT", "/api/admin/models/seedream-4.5", {"user_daily_quota": 1}, as_user=ADMIN)
    key = {"Idempotency-Key": "order-7"}
    old_task = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO, headers=key).data["id"]
    old_upload = api.request("POST", "/api/uploads", {"content_type": "image/png", "size": 1000}, as_user=DEMO)
    old_id = api.request("GET", "/api/users/me", as_user=DEMO).data.get("user_id")

    assert api.request("DELETE", "/api/admin/users/demo", as_user=ADMIN).status_code == 200
    again = ("demo", "a-new-password")
    assert api.request("POST", "/api/admin/users", {"username": again[0], "password": again[1]},
                       as_user=ADMIN).status_code == 201
    api.tokens.pop("demo")  # the old account's token is dead: `again` logs in afresh

    assert api.request("GET", "/api/tasks", as_user=again).data["tasks"] == []
    assert old_id and user_id_of("demo") != old_id
    for method, path in (("GET", ""), ("POST", "/cancel"), ("DELETE", "")):
        assert api.request(method, f"/api/tasks/{old_task}{path}", as_user=again).status_code == 404
    # The same key is a new request of a new account, within its own (fresh) daily quota.
    new_task = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=again, headers=key)
    assert new_task.status_code == 201 and new_task.data["id"] != old_task
    uses_old_upload = {**IMAGE_TASK, "images": [old_upload.data["ref"]]}
    assert api.request("POST", "/api/tasks", uses_old_upload, as_user=again).status_code == 400

    listed = api.request("GET", "/api/admin/tasks", as_user=ADMIN).data["tasks"]
    assert [(task["id"], task["user"], task["user_id"]) for task in listed] == [
        (new_task.data["id"], "demo", user_id_of("demo")), (old_task, "demo", old_id)]
    by_name = api.request("GET", "/api/admin/tasks?user=demo", as_user=ADMIN).data["tasks"]
    assert [task["id"] for task in by_name] == [new_task.data["id"]]
    me = api.request("GET", "/api/users/me", as_user=again).data
    assert (me["username"], me["user_id"]) == ("demo", user_id_of("demo"))


class ClosingManagementApi(RecordingManagementApi):
    """`@connections` that also records which connections were closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[str] = []

    def delete_connection(self, ConnectionId: str) -> None:
        self.closed.append(ConnectionId)


def connect_event(ticket: str, connection_id: str) -> dict[str, Any]:
    return {"headers": {}, "queryStringParameters": {"ticket": ticket},
            "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": connection_id,
                               "domainName": "gateway.invalid", "stage": "api", "apiId": "local"}}


@pytest.fixture
def sockets(api: Api, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The app's live updates with a recording gateway; `open_socket(token, id)` connects with a new ticket."""

    gateway = ClosingManagementApi()
    settings = dataclasses.replace(get_settings(), websocket_management_url="http://gateway.invalid")
    live = LiveUpdates(wiring.current().bodies, settings=settings, client_for=lambda _: gateway)
    monkeypatch.setattr(wiring.current(), "live", live)

    def connect(token: str, connection_id: str) -> int:
        ticket = api.request("POST", "/api/ws/ticket", token=token).data["ticket"]
        return live.connect(connect_event(ticket, connection_id))["statusCode"]

    def is_open(connection_id: str) -> bool:
        return connection_id not in gateway.closed and ConnectionRecord.count(connection_id) == 1

    return connect, is_open


def test_logout_disable_password_change_and_delete_close_the_websockets_they_end(api: Api, sockets: Any) -> None:
    """Safeguard: a connection records the session whose ticket opened it; ending that session closes it, and
    ending every session of an account (disable, password change, delete) closes all of its connections."""
    connect, is_open = sockets
    morning, evening = api.token(DEMO), login_token(api, DEMO)
    other = api.token(OTHER)
    assert [connect(morning, "demo-a="), connect(evening, "demo-b="), connect(other, "other-a=")] == [200] * 3

    assert api.request("POST", "/api/users/logout", token=morning).status_code == 200
    assert (is_open("demo-a="), is_open("demo-b="), is_open("other-a=")) == (False, True, True)

    assert api.request("PUT", "/api/admin/users/demo", {"password": "changed-password"}, as_user=ADMIN).status_code \
        == 200
    assert (is_open("demo-b="), is_open("other-a=")) == (False, True)

    assert connect(login_token(api, ("demo", "changed-password")), "demo-c=") == 200
    assert api.request("PUT", "/api/admin/users/demo", {"disabled": True}, as_user=ADMIN).status_code == 200
    assert not is_open("demo-c=")

    assert api.request("DELETE", "/api/admin/users/other", as_user=ADMIN).status_code == 200
    assert not is_open("other-a=")


def login_token(api: Api, user: tuple[str, str]) -> str:
    response = api.request("POST", "/api/users/login", {"username": user[0], "password": user[1]})
    assert response.status_code == 200, response.body
    return response.data["token"]


@pytest.mark.usefixtures("sockets")
@pytest.mark.parametrize("ending", ["disabled", "deleted", "deleted and the name used again", "logged out",
                                    "password changed"])
def test_a_ticket_opens_no_socket_once_its_session_or_account_has_ended(api: Api, ending: str) -> None:
    """Safeguard: `$connect` checks the ticket's session and account again, within the ticket's minute."""
    token = login_token(api, DEMO)
    ticket = api.request("POST", "/api/ws/ticket", token=token).data["ticket"]
    if ending == "disabled":
        api.request("PUT", "/api/admin/users/demo", {"disabled": True}, as_user=ADMIN)
    elif ending.startswith("deleted"):
        api.request("DELETE", "/api/admin/users/demo", as_user=ADMIN)
        if ending.endswith("again"):
            api.request("POST", "/api/admin/users", {"username": "demo", "password": DEMO[1]}, as_user=ADMIN)
    elif ending == "logged out":
        api.request("POST", "/api/users/logout", token=token)
    else:
        api.request("PUT", "/api/admin/users/demo", {"password": "changed-password"}, as_user=ADMIN)

    refused = wiring.current().live.connect(connect_event(ticket, "late="))
    assert refused["statusCode"] == 401
    assert ConnectionRecord.count("late=") == 0


# --- input the API must refuse before it reads anything -------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/users/login", "/api/tasks"])
@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_deeply_nested_json_is_refused_before_it_is_decoded(api: Api, path: str, depth: int) -> None:
    nested = '{"type": "image", "model_id": "seedream-4.5", "prompt": ' + "[" * depth + "]" * depth + "}"
    response = api.request("POST", path, raw=nested, as_user=None if path.endswith("login") else DEMO)
    # Too deep (400) or, for a login, larger than any login (413): either way never decoded.
    assert (response.status_code, response.data["error"]["code"]) in ((400, "malformed_json"),
                                                                      (413, "payload_too_large"))
    assert response.status_code == 400 or len(nested) > 4096


def test_a_login_body_larger_than_any_login_is_refused_before_it_is_decoded(api: Api) -> None:
    response = api.request("POST", "/api/users/login", {"username": "demo", "password": "p" * 10_000})
    assert response.status_code == 413


@pytest.fixture
def dynamodb_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every DynamoDB request the app sends, as JSON (moto accepts keys AWS refuses: what counts is that none
    is sent)."""
    from botocore.client import BaseClient

    sent: list[str] = []
    real_call = BaseClient._make_api_call

    def recording_call(client: Any, operation: str, params: dict) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            sent.append(json.dumps(params, default=str))
        return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording_call)
    return sent


OVERSIZED = {"task_id": "tsk_" + "a" * 1996, "model_id": "m" * 2000, "username": "u" * 2000}
MALFORMED = {"task_id": "tsk_AAAAAAAAAAAAAAAAAAAAAAAAAA", "model_id": "Seedream 4.5", "username": "demo'--"}


@pytest.mark.parametrize("values", [OVERSIZED, MALFORMED], ids=["oversized", "malformed"])
def test_ids_outside_their_format_are_refused_on_every_route_before_any_read(
    api: Api, dynamodb_requests: list[str], values: dict[str, str]
) -> None:
    """Safeguard: `Http.endpoint` checks every path parameter against its format (`validation.PATH_PARAMETERS`)
    before the view runs; listed from the app's own routes, so a new route with an id is covered too."""
    from urllib.parse import quote

    from app import app

    api.token(ADMIN)
    checked = 0
    for path, methods in app.routes.items():
        names = [name for name in values if "{" + name + "}" in path]
        for name, method in ((name, method) for name in names for method in methods if method != "OPTIONS"):
            concrete = path.replace("{task_id}", "tsk_" + "a" * 26).replace("{model_id}", "seedream-4.5")
            concrete = concrete.replace("{username}", "demo").replace(
                {"task_id": "tsk_" + "a" * 26, "model_id": "seedream-4.5", "username": "demo"}[name],
                quote(values[name], safe=""))
            dynamodb_requests.clear()
            response = api.request(method, concrete, {"status": "failed"}, as_user=ADMIN)
            assert 400 <= response.status_code < 500 and response.data["error"]["code"], (method, path)
            assert not any(values[name] in request for request in dynamodb_requests), (method, path)
            checked += 1
    assert checked >= 9


def test_oversized_keys_in_the_callback_cursor_and_idempotency_key_are_refused_before_any_read(
    api: Api, dynamodb_requests: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.ark.client import VolcVideoClient

    wiring.install(wiring.current().but(video_client=VolcVideoClient("http://127.0.0.1:9", "sk-unused")))
    api.token(DEMO)
    api.token(ADMIN)
    long_task_id, long_key = OVERSIZED["task_id"], "k" * 2000
    cursor = base64.urlsafe_b64encode(("2026-01-01T00:00:00.000Z#" + "x" * 1500).encode()).decode()
    dynamodb_requests.clear()
    answers = {
        "callback": api.request("POST", f"/api/queue/callback?task_id={long_task_id}&token=t", {"id": "cgt-1"}),
        "cursor": api.request("GET", f"/api/tasks?cursor={cursor}", as_user=DEMO),
        "idempotency key": api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO,
                                       headers={"Idempotency-Key": long_key}),
        "admin user filter": api.request("GET", "/api/admin/tasks?user=" + "u" * 2000, as_user=ADMIN),
    }
    for name, response in answers.items():
        assert 400 <= response.status_code < 500 and response.data["error"]["code"], name
    assert answers["idempotency key"].data["error"]["details"][0]["field"] == "Idempotency-Key"
    assert not any(value in request for request in dynamodb_requests
                   for value in (long_task_id, long_key, "x" * 1500, "u" * 2000))
    assert api.request("GET", "/api/tasks", as_user=DEMO).data["tasks"] == []
    # At the cap, a key is used as given.
    headers = {"Idempotency-Key": "k" * 255}
    first = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO, headers=headers)
    assert first.status_code == 201
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO, headers=headers).data == first.data


# --- parallel password guesses on the real stack ---------------------------------------------------------------


@pytest.mark.stack
def test_forty_parallel_wrong_logins_on_the_stack_reach_the_password_check_five_times(local_stack: Any) -> None:
    """40 wrong passwords for one user at once over HTTP: the throttle counts before checking, so 5 are
    answered 401 (LOGIN_MAX_FAILURES) and the rest 429; the right password then waits too."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    timeout = httpx.Timeout(60.0)
    admin = httpx.post(f"{local_stack.api_url}/api/users/login", timeout=timeout, json={
        "username": local_stack.admin.username, "password": local_stack.admin.password}).json()["token"]
    victim = {"username": f"victim-{uuid.uuid4().hex[:8]}", "password": "the-right-password"}
    created = httpx.post(f"{local_stack.api_url}/api/admin/users", json=victim, timeout=timeout,
                         headers={"Authorization": f"Bearer {admin}"})
    assert created.status_code == 201, created.text

    def guess(number: int) -> int:
        return httpx.post(f"{local_stack.api_url}/api/users/login", timeout=timeout,
                          json={"username": victim["username"], "password": f"guess-{number}"}).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        codes = sorted(pool.map(guess, range(40)))
    assert codes == [401] * 5 + [429] * 35
    assert httpx.post(f"{local_stack.api_url}/api/users/login", json=victim, timeout=timeout).status_code == 429
