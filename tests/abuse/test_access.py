"""No one gets in: other users' tasks, routes without a token, server-owned fields, hostile bodies."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from chalicelib import aws, quota, statemachine
from chalicelib.clock import SYSTEM_CLOCK
from chalicelib.db import TaskRecord
from chalicelib.settings import get_settings
from chalicelib.tasks import TaskService
from chalicelib.ws import Connections, LiveUpdates
from tests.conftest import ADMIN, DEMO, OTHER, Api
from tests.test_tasks_api import IMAGE_TASK, png_data_uri

pytestmark = pytest.mark.abuse

PUBLIC_ROUTES = {("/api/health", "GET"), ("/api/users/login", "POST"), ("/api/queue/callback", "POST")}


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
    publisher = LiveUpdates(TaskService(s3=aws.s3(), sqs=aws.sqs()), settings=settings,
                            client_for=lambda _: gateway)
    Connections().open("demo-socket=", DEMO[0])
    Connections().open("other-socket=", OTHER[0])
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


def test_every_route_but_login_health_and_the_callback_needs_a_token(api: Api) -> None:
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
    bodies = [{**IMAGE_TASK, **SERVER_OWNED_TASK_FIELDS},
              {**video, "params": {"duration": 5, "status": "succeeded", "external_id": "cgt-2"}}]

    for body in bodies:
        response = create(api, body)
        assert response.status_code == 400 and response.data["error"]["code"] == "validation_error"
        named = {detail["field"] for detail in response.data["error"]["details"]}
        assert named == set(SERVER_OWNED_TASK_FIELDS) or named == {"params.status", "params.external_id"}

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
