"""The local WebSocket gateway holds API Gateway's limits: message size, idle timeout and connection lifetime, and a
connection the app let in always ends with its `$disconnect`.

The limits count on a clock these tests move by hand (`close_expired` applies them after each move), so however
slowly a loaded machine serves a message, a connection is open or closed at exactly the times API Gateway's own
numbers say; one test keeps the real clock, scaled down, to show the gateway closes a connection by itself."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from chalice import Chalice
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from chalicelib.store.records import ConnectionRecord
from devstack.ws_gateway import GatewayLimits, WebSocketGateway
from tests.clocks import FrozenClock
from tests.factories import DEMO
from tests.live.conftest import receive
from tests.polling import wait_for

IDLE_S, LIFETIME_S = GatewayLimits().idle_timeout_s, GatewayLimits().max_connection_s


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(start=0.0)


@pytest.fixture
def gateway_clock(clock: FrozenClock) -> Callable[[], float]:
    return clock.now


def stored_connections() -> list[str]:
    return [record.connection_id for record in ConnectionRecord.scan()]


def served_connection(gateway: WebSocketGateway) -> str:
    """The id of the one connection, once the gateway serves it (its limits apply from then)."""
    [connection_id] = stored_connections()
    wait_for(lambda: gateway.info(connection_id) is not None)
    return connection_id


def closed_with(client: Any) -> int:
    """Waits for the gateway to close the socket; returns the code it closed with."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            client.recv(timeout=15)
    assert closed.value.rcvd is not None, "the gateway closed the TCP connection without a close frame"
    return closed.value.rcvd.code


def ping(client: Any) -> None:
    """A client message (the pong the app posts back is not one)."""
    client.send(json.dumps({"action": "ping"}))
    assert receive(client, timeout_s=15) == {"type": "pong"}


def test_a_connection_no_client_message_reaches_closes_at_the_idle_timeout_and_the_app_forgets_it(
    open_socket, gateway: WebSocketGateway, clock: FrozenClock
) -> None:
    client = open_socket(DEMO)
    connection_id = served_connection(gateway)

    clock.advance(IDLE_S - 1)
    assert gateway.close_expired() == []
    clock.advance(1)
    assert gateway.close_expired() == [connection_id]

    assert closed_with(client) == CloseCode.GOING_AWAY
    wait_for(lambda: stored_connections() == [])


def test_a_client_that_keeps_talking_stays_past_the_idle_timeout_and_closes_at_the_connection_limit(
    open_socket, gateway: WebSocketGateway, clock: FrozenClock
) -> None:
    client = open_socket(DEMO)
    connection_id = served_connection(gateway)
    talk_every_s = IDLE_S - 60  # a message a minute before each idle timeout

    while clock.now() + talk_every_s < LIFETIME_S:
        clock.advance(talk_every_s)
        assert gateway.close_expired() == []
        ping(client)
    assert clock.now() > IDLE_S  # talking kept it open many idle timeouts long
    clock.advance(LIFETIME_S - 1 - clock.now())
    assert gateway.close_expired() == []
    clock.advance(1)
    assert gateway.close_expired() == [connection_id]  # the lifetime ends it, talking or not

    assert closed_with(client) == CloseCode.GOING_AWAY
    wait_for(lambda: stored_connections() == [])


@pytest.mark.parametrize(("gateway_limits", "gateway_clock"), [(GatewayLimits(idle_timeout_s=0.5), time.monotonic)])
def test_on_the_real_clock_the_gateway_closes_an_idle_connection_by_itself(open_socket) -> None:
    client = open_socket(DEMO)

    assert closed_with(client) == CloseCode.GOING_AWAY
    wait_for(lambda: stored_connections() == [])


def test_a_message_over_128_kb_from_a_client_closes_its_connection_with_1009(open_socket) -> None:
    client = open_socket(DEMO)
    ping(client)

    client.send(json.dumps({"action": "ping", "padding": "x" * (128 * 1024)}))

    assert closed_with(client) == CloseCode.MESSAGE_TOO_BIG
    wait_for(lambda: stored_connections() == [])


def test_a_connection_whose_handshake_fails_after_connect_accepted_it_gets_its_disconnect() -> None:
    app = Chalice("gateway-probe", configure_logs=False)
    app.experimental_feature_flags.update(["WEBSOCKETS"])
    connected, disconnected = [], []
    client_gone = threading.Event()

    @app.on_ws_connect()
    def on_connect(event: Any) -> dict[str, int]:
        connected.append(event.connection_id)
        client_gone.wait(10)  # the client resets the TCP connection while the app decides
        return {"statusCode": 200}

    @app.on_ws_disconnect()
    def on_disconnect(event: Any) -> dict[str, int]:
        disconnected.append(event.connection_id)
        return {"statusCode": 200}

    with WebSocketGateway("127.0.0.1", 0) as gateway:
        gateway.start(app, None, "dev")
        raw = socket.create_connection(("127.0.0.1", gateway.port))
        raw.sendall(b"GET /?ticket=t HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        wait_for(lambda: connected)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # with linger 0: a reset, so the gateway's 101 cannot be sent
        client_gone.set()

        wait_for(lambda: disconnected == connected)
