"""Quota and idempotency under real parallel HTTP requests against the running local stack."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devstack.testing import Credentials, LocalStack

pytestmark = pytest.mark.stack


# The lane workers run the accepted tasks meanwhile, so answers can be slow on a busy machine.
TIMEOUT = httpx.Timeout(60.0)


def _login(stack: LocalStack, credentials: Credentials) -> dict[str, str]:
    response = httpx.post(
        f"{stack.api_url}/api/users/login",
        json={"username": credentials.username, "password": credentials.password},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _new_model(stack: LocalStack, admin: dict[str, str], daily_quota: int) -> str:
    model_id = f"race-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{stack.api_url}/api/admin/models",
        headers=admin,
        json={
            "model_id": model_id,
            "type": "image",
            "upstream_model": "doubao-seedream-4-5-251128",
            "concurrency": 1,
            "daily_quota": daily_quota,
        },
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return model_id


def _racer(stack: LocalStack, admin: dict[str, str]) -> Credentials:
    """A user of the test's own whose creation rate limit lets its 200 requests in within the minute (so what
    refuses them is the quota)."""
    credentials = Credentials(f"race-{uuid.uuid4().hex[:8]}", "race-test-password", "user")
    response = httpx.post(f"{stack.api_url}/api/admin/users", headers=admin, timeout=TIMEOUT, json={
        "username": credentials.username, "password": credentials.password, "requests_per_minute": 10_000})
    assert response.status_code == 201, response.text
    return credentials


def _usage_today(stack: LocalStack, admin: dict[str, str], model_id: str) -> dict:
    return httpx.get(f"{stack.api_url}/api/admin/models/{model_id}", headers=admin, timeout=TIMEOUT).json()[
        "usage_today"
    ]


def _submit_in_parallel(stack: LocalStack, headers: dict[str, str], body: dict, count: int) -> list[httpx.Response]:
    with httpx.Client(timeout=TIMEOUT) as client, ThreadPoolExecutor(max_workers=40) as pool:
        return list(pool.map(lambda _: client.post(f"{stack.api_url}/api/tasks", headers=headers, json=body),
                             range(count)))


@pytest.mark.abuse
def test_parallel_requests_never_exceed_the_daily_quota(local_stack: LocalStack) -> None:
    """Safeguard: the quota is consumed by a conditional increment (`used < limit`) inside the task's creation
    transaction, so parallel requests cannot both see the last request free."""
    admin = _login(local_stack, local_stack.admin)
    demo = _login(local_stack, _racer(local_stack, admin))
    model_id = _new_model(local_stack, admin, daily_quota=100)

    responses = _submit_in_parallel(
        local_stack, demo, {"type": "image", "model_id": model_id, "prompt": "race"}, count=200
    )

    codes = sorted(response.status_code for response in responses)
    assert codes.count(201) == 100
    assert codes.count(429) == 100
    assert {response.json()["error"]["code"] for response in responses if response.status_code == 429} == {
        "quota_exceeded"
    }
    usage = _usage_today(local_stack, admin, model_id)
    assert (usage["used"], usage["remaining"]) == (100, 0)
    listed = local_stack.list_tasks(admin, model_id=model_id)
    accepted = {response.json()["id"] for response in responses if response.status_code == 201}
    assert {task["id"] for task in listed} == accepted


def test_parallel_requests_with_one_idempotency_key_create_one_task(local_stack: LocalStack) -> None:
    admin = _login(local_stack, local_stack.admin)
    demo = _login(local_stack, local_stack.demo)
    model_id = _new_model(local_stack, admin, daily_quota=50)
    headers = {**demo, "Idempotency-Key": uuid.uuid4().hex}

    responses = _submit_in_parallel(
        local_stack, headers, {"type": "image", "model_id": model_id, "prompt": "once"}, count=20
    )

    assert {response.status_code for response in responses} == {201}
    assert len({response.json()["id"] for response in responses}) == 1
    usage = _usage_today(local_stack, admin, model_id)
    assert usage["used"] == 1
