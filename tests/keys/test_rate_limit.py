"""The per-user creation rate limit on `POST /api/tasks`: sessions and keys alike, set by admins, atomic."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib import wiring
from chalicelib.errors import ApiError
from chalicelib.store import rate_limit
from chalicelib.store.records import RateLimitRecord, TaskRecord
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import ADMIN, DEMO, IMAGE_TASK, OTHER, principal_of
from tests.keys.conftest import new_key

pytestmark = pytest.mark.abuse


def set_limit(api: Api, username: str, limit: int | None) -> dict:
    response = api.request("PUT", f"/api/admin/users/{username}", {"requests_per_minute": limit}, as_user=ADMIN)
    assert response.status_code == 200, response.body
    return response.data


def test_the_request_over_the_limit_waits_for_the_next_window(api: Api, clock: FrozenClock) -> None:
    """Sessions and keys of one account share its counter; another account has its own."""
    set_limit(api, "demo", 3)
    key = new_key(api, DEMO)["key"]
    accepted = [api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO),
                api.request("POST", "/api/tasks", IMAGE_TASK, token=key),
                api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO)]
    assert [response.status_code for response in accepted] == [201] * 3

    clock.advance(5)  # 20 s into the window
    refused = api.request("POST", "/api/tasks", IMAGE_TASK, token=key)
    assert (refused.status_code, refused.data["error"]["code"]) == (429, "rate_limited")
    assert refused.headers["Retry-After"] == "40"
    assert refused.data["error"]["details"] == {"requests_per_minute": 3, "retry_after_seconds": 40}
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).status_code == 429
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=OTHER).status_code == 201
    # Nothing of a refused request was written.
    assert sum(1 for task in TaskRecord.scan() if task.username == "demo") == 3

    clock.advance(39.5)  # half a second before the window ends: still waiting, for a whole second
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).headers["Retry-After"] == "1"
    clock.advance(0.5)
    assert api.request("POST", "/api/tasks", IMAGE_TASK, token=key).status_code == 201


def test_the_default_is_sixty_a_minute(api: Api, clock: FrozenClock) -> None:
    assert next(user for user in api.request("GET", "/api/admin/users", as_user=ADMIN).data["users"]
                if user["username"] == "demo")["requests_per_minute"] == rate_limit.DEFAULT_REQUESTS_PER_MINUTE == 60
    service, demo = wiring.current().intake, principal_of(DEMO)
    for _ in range(60):
        service.create(demo, IMAGE_TASK)
    with pytest.raises(ApiError) as refused:
        service.create(demo, IMAGE_TASK)
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")


def test_a_replayed_idempotency_key_is_not_counted_again(api: Api, clock: FrozenClock) -> None:
    set_limit(api, "demo", 2)
    first = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO, headers={"Idempotency-Key": "order-1"})
    for _ in range(5):
        replay = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO, headers={"Idempotency-Key": "order-1"})
        assert (replay.status_code, replay.data) == (201, first.data)
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).status_code == 201
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).status_code == 429


def test_admins_set_the_limit_per_user_within_bounds(api: Api) -> None:
    assert set_limit(api, "demo", 500)["requests_per_minute"] == 500
    listed = api.request("GET", "/api/admin/users", as_user=ADMIN).data["users"]
    assert {user["username"]: user["requests_per_minute"] for user in listed} == {"admin": 60, "demo": 500,
                                                                                 "other": 60}
    assert set_limit(api, "demo", None)["requests_per_minute"] == 60
    created = api.request("POST", "/api/admin/users", {"username": "bench", "password": "bench-password",
                                                       "requests_per_minute": 10_000}, as_user=ADMIN)
    assert created.data["requests_per_minute"] == 10_000

    for value in (0, 10_001, -1, "60", True, 1.5):
        refused = api.request("PUT", "/api/admin/users/demo", {"requests_per_minute": value}, as_user=ADMIN)
        assert refused.status_code == 400, value
        assert [detail["field"] for detail in refused.data["error"]["details"]] == ["requests_per_minute"]
    assert api.request("PUT", "/api/admin/users/demo", {"requests_per_minute": 1000}, as_user=DEMO).status_code \
        == 403


def test_a_raised_limit_applies_to_the_next_request_of_an_open_session(api: Api, clock: FrozenClock) -> None:
    set_limit(api, "demo", 1)
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).status_code == 201
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).status_code == 429
    set_limit(api, "demo", 2)
    assert api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).status_code == 201


@pytest.mark.usefixtures("one_call_at_a_time")
def test_parallel_creations_pass_the_limit_exactly(api: Api, clock: FrozenClock) -> None:
    """Safeguard: one conditional increment (`used < limit`) per creation. 30 creations at once against a limit
    of 10: exactly 10 tasks."""
    set_limit(api, "demo", 10)
    service, demo = wiring.current().intake, principal_of(DEMO)
    attempts = 30
    start_together = threading.Barrier(attempts)

    def create(_: int) -> int:
        start_together.wait()
        try:
            return service.create(demo, IMAGE_TASK).status_code
        except ApiError as error:
            assert error.code == "rate_limited"
            return error.status

    with ThreadPoolExecutor(attempts) as pool:
        codes = sorted(pool.map(create, range(attempts)))
    assert codes == [201] * 10 + [429] * 20
    assert sum(1 for task in TaskRecord.scan() if task.username == "demo") == 10
    (counter,) = RateLimitRecord.scan()
    assert int(counter.used) == 10
    assert counter.expires_at_epoch > clock.now()  # the counter expires (TTL), after its window
