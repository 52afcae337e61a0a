"""The local WebSocket gateway in-process, serving the real app's handlers against in-process moto."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from devstack.ws_gateway import GatewayLimits, WebSocketGateway
from tests.api_client import Api
from tests.conftest import reconfigure

WEB_ORIGIN = "http://127.0.0.1:8080"


@pytest.fixture(autouse=True)
def web_origin_allowed() -> Iterator[None]:
    """The web app's origin may open WebSockets (set before the in-process AWS fixtures read settings)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WS_ALLOWED_ORIGINS", WEB_ORIGIN)
        yield
    reconfigure()


@pytest.fixture
def gateway_limits() -> GatewayLimits:
    """API Gateway's own limits; a test module scales them down by overriding this fixture."""
    return GatewayLimits()


@pytest.fixture
def gateway_clock() -> Callable[[], float]:
    """The clock the gateway's limits count on; a test module drives its own by overriding this fixture."""
    return time.monotonic


@pytest.fixture
def gateway(api: Api, monkeypatch: pytest.MonkeyPatch, gateway_limits: GatewayLimits,
            gateway_clock: Callable[[], float]) -> Iterator[WebSocketGateway]:
    from app import app

    with WebSocketGateway("127.0.0.1", 0, limits=gateway_limits, clock=gateway_clock) as running:
        for name, value in running.app_environment().items():
            monkeypatch.setenv(name, value)
        reconfigure()
        running.start(app, None, "dev")
        yield running


def ticket_for(api: Api, user: tuple[str, str]) -> dict[str, Any]:
    response = api.request("POST", "/api/ws/ticket", as_user=user)
    assert response.status_code == 200, response.body
    return response.data


@pytest.fixture
def open_socket(api: Api, gateway: WebSocketGateway) -> Iterator[Callable[[tuple[str, str]], ClientConnection]]:
    """Log `user` in, get a ticket and connect with it from the web app's origin; closed at the end."""
    sockets: list[ClientConnection] = []

    def open_for(user: tuple[str, str]) -> ClientConnection:
        socket = connect(ticket_for(api, user)["url"], origin=WEB_ORIGIN, open_timeout=10)
        sockets.append(socket)
        return socket

    yield open_for
    for socket in sockets:
        socket.close()


def receive(socket: ClientConnection, timeout_s: float = 10.0) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=timeout_s))


def nothing_pending(socket: ClientConnection) -> bool:
    """True when the next message after a ping is its pong: anything already sent to the socket comes first."""
    socket.send(json.dumps({"action": "ping"}))
    return receive(socket) == {"type": "pong"}


