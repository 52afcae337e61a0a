"""`DELETE /api/tasks/{id}`: the owner or an admin removes a finished task and every object stored for it."""

from __future__ import annotations

import base64
import io
import os
from typing import Any

import boto3
import pytest
from PIL import Image

from chalicelib.media import storage
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord
from tests.api_client import Api
from tests.factories import ADMIN, DEMO, OTHER

BUCKET = os.environ["RESULTS_BUCKET"]  # set by tests/conftest.py


def png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def stored_keys(task_id: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"tasks/{task_id}/")
    return [item["Key"] for item in listing.get("Contents", [])]


def create_task(api: Api, user=DEMO) -> str:
    body = {"type": "image", "model_id": "seedream-4.5", "prompt": "a kite", "images": [png_data_uri()]}
    response = api.request("POST", "/api/tasks", body, as_user=user)
    assert response.status_code == 201, response.body
    return response.data["id"]


def finish(task_id: str) -> None:
    """The task runs and succeeds, as its lane worker would take it there."""
    task = statemachine.transition(TaskRecord.get(task_id, consistent_read=True), statemachine.RUNNING)
    statemachine.transition(task, statemachine.SUCCEEDED, actions=[TaskRecord.result_urls.set(["https://ark/0.png"])])


def test_owner_deletes_a_finished_task_and_its_stored_objects(api: Api) -> None:
    task_id = create_task(api)
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"tasks/{task_id}/results/image-0.jpeg", Body=b"result")
    assert len(stored_keys(task_id)) == 2

    unfinished = api.request("DELETE", f"/api/tasks/{task_id}", as_user=DEMO)
    assert unfinished.status_code == 409 and unfinished.data["error"]["code"] == "task_not_finished"
    assert len(stored_keys(task_id)) == 2

    finish(task_id)
    assert api.request("DELETE", f"/api/tasks/{task_id}", as_user=OTHER).status_code == 404
    assert len(stored_keys(task_id)) == 2

    deleted = api.request("DELETE", f"/api/tasks/{task_id}", as_user=DEMO)
    assert deleted.status_code == 200
    assert deleted.data == {"deleted": task_id, "objects_deleted": 2}
    assert stored_keys(task_id) == []
    assert api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).status_code == 404
    assert api.request("DELETE", f"/api/tasks/{task_id}", as_user=DEMO).status_code == 404


def test_an_admin_deletes_any_users_finished_task(api: Api) -> None:
    task_id = create_task(api, user=OTHER)
    finish(task_id)
    assert api.request("DELETE", f"/api/tasks/{task_id}", as_user=ADMIN).status_code == 200
    assert stored_keys(task_id) == []
    assert api.request("GET", f"/api/tasks/{task_id}", as_user=OTHER).status_code == 404


def test_of_two_deletes_racing_for_a_task_the_second_gets_404(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = create_task(api)
    finish(task_id)
    delete_objects = storage.delete_prefix
    racing: list[str] = []

    def owner_deletes_it_too(*args: Any) -> int:
        """The admin's delete has read the task and removed its objects when the owner's delete runs."""
        deleted = delete_objects(*args)
        if not racing:
            racing.append("owner")
            assert api.request("DELETE", f"/api/tasks/{task_id}", as_user=DEMO).status_code == 200
        return deleted

    monkeypatch.setattr(storage, "delete_prefix", owner_deletes_it_too)
    late = api.request("DELETE", f"/api/tasks/{task_id}", as_user=ADMIN)

    assert racing == ["owner"]
    assert late.status_code == 404 and late.data["error"]["code"] == "task_not_found"
    assert stored_keys(task_id) == []
