"""Load against the real local stack: parallel HTTP clients, the SQS event pump running workers in parallel
(up to each lane's reserved concurrency) and the simulator counting what reaches Ark."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from devstack.config import Credentials
from devstack.testing import LocalStack

pytestmark = [pytest.mark.abuse, pytest.mark.stack]

TIMEOUT = httpx.Timeout(60.0)
# Eight image workers contend for three slots within a few dozen tasks: 60 keep them at it for seconds, with every
# worker refused, parked and handed a slot many times over.
PARALLEL_TASKS = 60
# Only these tests send this upstream model to the stack's simulator, so its counters are theirs alone.
UPSTREAM_MODEL = "doubao-seedream-4-0-250828"
# Far above what these tests send in a minute.
LOAD_REQUESTS_PER_MINUTE = 10_000


def login(stack: LocalStack, credentials: Credentials) -> dict[str, str]:
    response = httpx.post(f"{stack.api_url}/api/users/login", timeout=TIMEOUT,
                          json={"username": credentials.username, "password": credentials.password})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def new_user(stack: LocalStack, admin: dict[str, str]) -> dict[str, str]:
    """A user of this test's own: its hundreds of tasks stay out of the demo user's studio (other tests' page), and
    its creation rate limit is raised to let them all in within the minute."""
    credentials = Credentials(f"load-{uuid.uuid4().hex[:8]}", "load-test-password", "user")
    response = httpx.post(f"{stack.api_url}/api/admin/users", headers=admin, timeout=TIMEOUT,
                          json={"username": credentials.username, "password": credentials.password,
                                "requests_per_minute": LOAD_REQUESTS_PER_MINUTE})
    assert response.status_code == 201, response.text
    return login(stack, credentials)


def new_model(stack: LocalStack, admin: dict[str, str], **settings: Any) -> str:
    model_id = f"load-{uuid.uuid4().hex[:8]}"
    response = httpx.post(f"{stack.api_url}/api/admin/models", headers=admin, timeout=TIMEOUT, json={
        "model_id": model_id, "type": "image", "upstream_model": UPSTREAM_MODEL, **settings})
    assert response.status_code == 201, response.text
    return model_id


def submit_in_parallel(stack: LocalStack, headers: dict[str, str], body: dict, count: int) -> list[httpx.Response]:
    with httpx.Client(timeout=TIMEOUT) as client, ThreadPoolExecutor(max_workers=min(count, 40)) as pool:
        return list(pool.map(lambda _: client.post(f"{stack.api_url}/api/tasks", headers=headers, json=body),
                             range(count)))


def unfinished(stack: LocalStack, admin: dict[str, str], model_id: str) -> int:
    return sum(len(stack.list_tasks(admin, model_id=model_id, status=status)) for status in ("queued", "running"))


def test_parallel_tasks_never_exceed_the_models_concurrency_at_ark_and_all_complete(
    local_stack: LocalStack,
) -> None:
    """Safeguard: the per-model slot semaphore (a conditional `count < concurrency` write) caps calls in flight
    at Ark below the lane's worker concurrency (8 image workers here against 3 slots); every slot is given back."""
    admin = login(local_stack, local_stack.admin)
    user = new_user(local_stack, admin)
    concurrency = 3
    model_id = new_model(local_stack, admin, concurrency=concurrency, daily_quota=1000)
    body = {"type": "image", "model_id": model_id, "prompt": "load"}

    # Long enough for calls to overlap at Ark, short enough that all of them take seconds.
    with local_stack.simulator_config(image_latency_s=0.2):
        responses = submit_in_parallel(local_stack, user, body, count=PARALLEL_TASKS)
        assert [response.status_code for response in responses] == [201] * PARALLEL_TASKS
        deadline = time.monotonic() + 150
        while unfinished(local_stack, admin, model_id):
            assert time.monotonic() < deadline, "tasks still unfinished"
            time.sleep(0.5)

    stats = httpx.get(f"{local_stack.sim_url}/_sim/stats").json()
    assert stats["max_in_flight"][UPSTREAM_MODEL] == concurrency  # reached, never passed
    assert stats["calls"]["images.generate"][UPSTREAM_MODEL] >= PARALLEL_TASKS
    assert len(local_stack.list_tasks(admin, model_id=model_id, status="succeeded")) == PARALLEL_TASKS
    model = httpx.get(f"{local_stack.api_url}/api/admin/models/{model_id}", headers=admin, timeout=TIMEOUT).json()
    assert model["slots_in_use"] == 0 and model["usage_today"]["used"] == PARALLEL_TASKS
