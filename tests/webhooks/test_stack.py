"""A webhook end to end over the real local stack (`python -m devstack`): a task naming a receiver on this machine
(which the local stack allows) gets its `task.succeeded`, signed with the user's secret, through the stack's own
queue and pump."""

from __future__ import annotations

import httpx
import pytest
from standardwebhooks import Webhook

from devstack.testing import LocalStack
from tests.polling import wait_for
from tests.webhooks.conftest import Receiver, payload

pytestmark = pytest.mark.stack


def test_a_task_with_a_webhook_url_gets_a_verified_task_succeeded(local_stack: LocalStack,
                                                                  receiver: Receiver) -> None:
    with httpx.Client(base_url=local_stack.api_url, timeout=30) as api:
        login = api.post("/api/users/login", json={"username": local_stack.demo.username,
                                                   "password": local_stack.demo.password})
        assert login.status_code == 200, login.text
        api.headers["Authorization"] = f"Bearer {login.json()['token']}"
        secret = api.get("/api/webhooks/secret").json()["secret"]
        created = api.post("/api/tasks", json={"type": "image", "model_id": "seedream-4.5", "prompt": "a heron",
                                               "max_images": 1, "webhook_url": receiver.url})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]

        wait_for(lambda: receiver.received, timeout_s=90, interval_s=0.2)
        [got] = receiver.received
        event = Webhook(secret).verify(got.body, got.headers)
        assert (event["type"], event["data"]["id"], event["data"]["status"]) == ("task.succeeded", task_id,
                                                                                  "succeeded")
        assert event == payload(got) and event["data"]["result_urls"]
        assert httpx.get(event["data"]["result_urls"][0], timeout=30).status_code == 200  # downloadable
        deliveries = api.get("/api/webhooks/deliveries", params={"task_id": task_id}).json()["deliveries"]
        assert [(row["type"], row["status_code"], row["outcome"]) for row in deliveries] == [
            ("task.succeeded", 204, "delivered")]
