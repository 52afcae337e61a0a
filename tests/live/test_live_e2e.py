"""Live updates end to end over the real local stack (`python -m devstack`) with real WebSocket clients."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from devstack.config import Credentials
from devstack.testing import LocalStack
from tests.live.conftest import nothing_pending

pytestmark = pytest.mark.stack

IMAGE_TASK = {"type": "image", "model_id": "seedream-4.5", "prompt": "a red kite over the sea", "max_images": 1}
VIDEO_TASK = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "waves at night",
              "params": {"resolution": "480p", "duration": 3}}


def login(stack: LocalStack, user: Credentials) -> httpx.Client:
    client = httpx.Client(base_url=stack.api_url, timeout=30)
    response = client.post("/api/users/login", json={"username": user.username, "password": user.password})
    assert response.status_code == 200, response.text
    client.headers["Authorization"] = f"Bearer {response.json()['token']}"
    return client


def ticket_url(api: httpx.Client) -> str:
    response = api.post("/api/ws/ticket")
    assert response.status_code == 200, response.text
    return response.json()["url"]


def follow(socket: ClientConnection, first_seen: dict[str, str], timeout_s: float = 90) -> dict[str, list[Any]]:
    """Updates as a client keeps them (newer versions only) until every task in `first_seen` has ended.

    Returns each task's status history (starting with what its POST answered) and its last update.
    """
    history = {task_id: [status] for task_id, status in first_seen.items()}
    versions = dict.fromkeys(first_seen, 0)
    last: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while any(statuses[-1] in ("queued", "running") for statuses in history.values()):
        message = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        assert message["type"] == "task_update", message
        update = message["data"]
        assert update["id"] in history, f"an update for someone else's task: {update}"
        if update["version"] <= versions[update["id"]]:
            continue
        versions[update["id"]] = update["version"]
        last[update["id"]] = update
        if update["status"] != history[update["id"]][-1]:
            history[update["id"]].append(update["status"])
    return {task_id: [statuses, last[task_id]] for task_id, statuses in history.items()}


def new_user(stack: LocalStack) -> httpx.Client:
    """A user of this test alone: tasks other tests leave running on the shared stack never reach its socket."""
    credentials = Credentials(f"watcher-{uuid.uuid4().hex[:12]}", "watcher-pass-" + uuid.uuid4().hex[:12], "user")
    admin = login(stack, stack.admin)
    response = admin.post("/api/admin/users", json={"username": credentials.username,
                                                    "password": credentials.password})
    assert response.status_code == 201, response.text
    return login(stack, credentials)


def test_owner_watches_image_and_video_tasks_finish_and_no_one_else_sees_them(local_stack: LocalStack) -> None:
    demo, bystanding = new_user(local_stack), new_user(local_stack)
    origin = local_stack.web_url
    with connect(ticket_url(demo), origin=origin, open_timeout=10) as watcher, \
            connect(ticket_url(bystanding), origin=origin, open_timeout=10) as bystander:
        created = {}
        for body in (IMAGE_TASK, VIDEO_TASK):
            response = demo.post("/api/tasks", json=body)
            assert response.status_code == 201, response.text
            created[response.json()["id"]] = response.json()["status"]
        image_id, video_id = created

        seen = follow(watcher, created)

        assert nothing_pending(bystander)
    image_statuses, image_update = seen[image_id]
    video_statuses, video_update = seen[video_id]
    assert image_statuses == ["queued", "running", "succeeded"]
    assert video_statuses == ["queued", "running", "succeeded"]
    assert len(image_update["result_urls"]) == 1
    assert httpx.get(image_update["result_urls"][0], timeout=30).status_code == 200
    assert httpx.get(video_update["video_url"], timeout=30).status_code == 200


def test_missing_reused_and_foreign_origin_tickets_are_refused(local_stack: LocalStack) -> None:
    demo = login(local_stack, local_stack.demo)
    origin = local_stack.web_url

    with pytest.raises(InvalidStatus) as missing:
        connect(local_stack.ws_url, origin=origin, open_timeout=10)
    url = ticket_url(demo)
    with connect(url, origin=origin, open_timeout=10) as socket:
        assert nothing_pending(socket)
    with pytest.raises(InvalidStatus) as reused:
        connect(url, origin=origin, open_timeout=10)
    with pytest.raises(InvalidStatus) as foreign:
        connect(ticket_url(demo), origin="https://elsewhere.example", open_timeout=10)

    assert missing.value.response.status_code == 401
    assert reused.value.response.status_code == 401
    assert foreign.value.response.status_code == 403
