"""The local WebSocket gateway holds API Gateway's limits (scaled down here): message size, idle timeout and
connection lifetime, and a connection the app let in always ends with its `$disconnect`."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Any

import pytest
from chalice import Chalice
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from chalicelib.db import ConnectionRecord
from devstack.ws_gateway import GatewayLimits, WebSocketGateway
from tests.conftest import DEMO
from tests.polling import wait_for
from tests.ws.conftest import receive

IDLE_S, LIFETIME_S = 0.6, 2.5


@pytest.fixture
def gateway_limits() -> GatewayLimits:
    return GatewayLimits(idle_timeout_s=IDLE_S, max_connection_s=LIFETIME_S)


def stored_connections() -> list[str]:
    return [record.connection_id for record in ConnectionRecord.scan()]


def closed_with(client: Any) -> int:
    """Waits for the gateway to close the socket; returns the code it closed with."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            client.recv(timeout=15)
    assert closed.value.rcvd is not None, "the gateway closed the TCP connection without a close frame"
    return closed.value.rcvd.code


def test_a_connection_no_client_message_reaches_closes_at_the_idle_timeout_and_the_app_forgets_it(
    open_socket
) -> None:
    client = open_socket(DEMO)
    assert len(stored_connections()) == 1

    assert closed_with(client) == CloseCode.GOING_AWAY
    wait_for(lambda: stored_connections() == [])


def test_a_client_that_keeps_talking_stays_past_the_idle_timeout_and_closes_at_the_connection_limit(
    open_socket
) -> None:
    client = open_socket(DEMO)
    opened = time.monotonic()
    answered_until = opened
    with pytest.raises(ConnectionClosed) as closed:
        while True:  # pings back to back: each is a client message, its pong (posted by the app) is not
            client.send(json.dumps({"action": "ping"}))
            assert receive(client, timeout_s=15) == {"type": "pong"}
            answered_until = time.monotonic()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.GOING_AWAY
    assert answered_until - opened > IDLE_S  # talking kept it open past the idle timeout, the lifetime ended it
    wait_for(lambda: stored_connections() == [])


def test_a_message_over_128_kb_from_a_client_closes_its_connection_with_1009(open_socket) -> None:
    client = open_socket(DEMO)
    client.send(json.dumps({"action": "ping"}))
    assert receive(client) == {"type": "pong"}

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
