"""API keys' fixtures: a frozen clock under the app, keys made through the API, and AWS calls one at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import wiring
from tests.api_client import Api
from tests.clocks import FrozenClock

# Fifteen seconds into the minute before this one: a window's end is 45 s away. Near the real time and before it,
# since the token library checks a login's times against it (a token issued in the future is refused).
START = time.time() // 60 * 60 - 45


@pytest.fixture
def clock(api: Api) -> Iterator[FrozenClock]:
    """The app's clock (routes, keys, the rate limit), frozen; the seeded logins are made on it too."""
    frozen = FrozenClock(START)
    previous = wiring.current()
    wiring.install(previous.but(clock=frozen))
    yield frozen
    wiring.install(previous)


def new_key(api: Api, user: tuple[str, str], **body: Any) -> dict[str, Any]:
    response = api.request("POST", "/api/keys", {"name": "ci", **body}, as_user=user)
    assert response.status_code == 201, response.body
    return response.data


@pytest.fixture
def one_call_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process moto takes no lock, so threads could interleave inside one of its writes. Each AWS call runs
    alone here, as the local stack's moto server runs it and as DynamoDB applies one write: what the parallel
    tests race is the time between calls, which is what a real deployment races too."""
    from botocore.client import BaseClient

    lock = threading.Lock()
    real_call = BaseClient._make_api_call

    def one_at_a_time(client: Any, operation: str, params: dict) -> Any:
        with lock:
            return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", one_at_a_time)
