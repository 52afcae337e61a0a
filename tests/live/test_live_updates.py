"""Live updates: tickets, `$connect` rules, ping/pong, and task updates reaching their owner only.

The gateway tests run the real app's WebSocket handlers behind `devstack.ws_gateway` against in-process moto,
with real WebSocket clients and the app's boto3 `apigatewaymanagementapi` client posting to the gateway.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import boto3
import pytest
from websockets.exceptions import ConnectionClosed

from chalicelib import aws, wiring
from chalicelib.live import TICKET_TTL_S, LiveUpdates, TicketHolder, Tickets
from chalicelib.settings import get_settings, reload_settings
from chalicelib.store import statemachine
from chalicelib.store.records import ConnectionRecord, TaskRecord, WsTicketRecord
from devstack.ws_gateway import WebSocketGateway
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import DEMO, OTHER, principal_of, user_id_of
from tests.live.conftest import WEB_ORIGIN, nothing_pending, receive
from tests.polling import wait_for

IMAGE_TASK = {"type": "image", "model_id": "seedream-4.5", "prompt": "a lighthouse at dusk"}


def connections() -> list[ConnectionRecord]:
    return list(ConnectionRecord.scan())


def create_task(api: Api, user: tuple[str, str] = DEMO) -> TaskRecord:
    response = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=user)
    assert response.status_code == 201, response.body
    return TaskRecord.get(response.data["id"], consistent_read=True)


def connect_event(ticket: str | None, origin: str | None = WEB_ORIGIN, connection_id: str = "conn-1=") -> dict:
    event: dict[str, Any] = {
        "headers": {"Host": "127.0.0.1:8001", **({"Origin": origin} if origin else {})},
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": connection_id,
                           "domainName": "127.0.0.1:8001", "stage": "api", "apiId": "local"},
        "isBase64Encoded": False,
    }
    if ticket is not None:
        event["queryStringParameters"] = {"ticket": ticket}
    return event


def live_updates(clock: FrozenClock) -> LiveUpdates:
    return LiveUpdates(wiring.current().bodies, clock=clock)


# --- tickets -----------------------------------------------------------------------------------------------


def test_ticket_route_needs_a_login_and_stores_only_the_hash(api: Api, gateway: WebSocketGateway) -> None:
    assert api.request("POST", "/api/ws/ticket").status_code == 401

    response = api.request("POST", "/api/ws/ticket", as_user=DEMO)

    assert response.status_code == 200
    ticket = response.data["ticket"]
    assert response.data["url"] == f"{gateway.public_url}?ticket={ticket}"
    assert response.data["expires_at"].endswith("Z")
    stored = list(WsTicketRecord.scan())
    assert [record.ticket_hash for record in stored] == [hashlib.sha256(ticket.encode()).hexdigest()]
    assert stored[0].user_id == user_id_of(DEMO[0])


def test_ticket_redeems_once(seeded: None) -> None:
    tickets = Tickets()
    demo = principal_of(DEMO)
    ticket = tickets.issue(demo).ticket

    assert tickets.redeem(ticket) == TicketHolder(demo.user_id, demo.session_id)
    assert tickets.redeem(ticket) is None
    assert tickets.redeem("never-issued") is None


def test_ticket_expires_after_a_minute(seeded: None) -> None:
    clock = FrozenClock(1_700_000_000.0)
    tickets = Tickets(clock=clock)
    demo = principal_of(DEMO)
    in_time, too_late = tickets.issue(demo).ticket, tickets.issue(demo).ticket

    clock.advance(TICKET_TTL_S - 1)
    assert tickets.redeem(in_time) is not None
    clock.advance(2)
    assert tickets.redeem(too_late) is None


# --- $connect ----------------------------------------------------------------------------------------------


def test_connect_stores_the_connection_under_the_ticket_owner(seeded: None) -> None:
    live = live_updates(FrozenClock())
    demo = principal_of(DEMO)
    ticket = live.tickets.issue(demo).ticket

    assert live.connect(connect_event(ticket))["statusCode"] == 200

    assert [(record.connection_id, record.user_id, record.session_id) for record in connections()] == [
        ("conn-1=", demo.user_id, demo.session_id)]


@pytest.mark.parametrize("problem", ["missing", "reused", "expired", "unknown"])
def test_connect_without_a_valid_ticket_is_refused_and_stores_nothing(seeded: None, problem: str) -> None:
    clock = FrozenClock()
    live = live_updates(clock)
    ticket: str | None = live.tickets.issue(principal_of(DEMO)).ticket
    if problem == "missing":
        ticket = None
    elif problem == "reused":
        assert live.tickets.redeem(ticket or "") is not None
    elif problem == "expired":
        clock.advance(TICKET_TTL_S + 1)
    else:
        ticket = "made-up"

    assert live.connect(connect_event(ticket))["statusCode"] == 401
    assert connections() == []


def test_connect_from_a_foreign_origin_is_refused_and_stores_nothing(seeded: None) -> None:
    live = live_updates(FrozenClock())
    ticket = live.tickets.issue(principal_of(DEMO)).ticket

    assert live.connect(connect_event(ticket, origin="https://evil.example"))["statusCode"] == 403
    assert connections() == []
    # Clients that send no Origin (not browsers) are not subject to the check.
    assert live.connect(connect_event(ticket, origin=None))["statusCode"] == 200


# --- over the local gateway --------------------------------------------------------------------------------


def test_ping_gets_pong_and_garbage_gets_an_error_without_closing(open_socket) -> None:
    socket = open_socket(DEMO)

    for garbage in ("not json", json.dumps({"action": "dance"}), json.dumps([1, 2]), b"\x00\xff"):
        socket.send(garbage)
        reply = receive(socket)
        assert reply["type"] == "error"
        assert reply["error"]["code"] == "invalid_message"

    socket.send(json.dumps({"action": "ping"}))
    assert receive(socket) == {"type": "pong"}


@pytest.mark.abuse
def test_updates_reach_every_open_connection_of_the_owner_only_and_gone_ones_are_removed(
    api: Api, open_socket
) -> None:
    first, second, other = open_socket(DEMO), open_socket(DEMO), open_socket(OTHER)
    # Closed without its `$disconnect` reaching the app (it happens on AWS): the gateway answers 410 Gone.
    ConnectionRecord("vanished=", user_id=user_id_of(DEMO[0]), connected_at="2026-01-01T00:00:00.000Z",
                     expires_at_epoch=4_000_000_000).save()
    task = create_task(api)

    written = statemachine.transition(task, statemachine.RUNNING)

    assert written.status == "running"
    for socket in (first, second):
        assert receive(socket)["data"]["status"] == "queued"  # published when the task was created
        update = receive(socket)
        assert update["type"] == "task_update"
        assert update["data"]["id"] == task.task_id
        assert update["data"]["status"] == "running"
        assert update["data"]["version"] == 2
    assert nothing_pending(other)
    assert "vanished=" not in {record.connection_id for record in connections()}
    assert len(connections()) == 3


@pytest.mark.abuse
def test_an_unreachable_gateway_never_fails_the_transition(api: Api, monkeypatch) -> None:
    ConnectionRecord("somebody=", user_id=user_id_of(DEMO[0]), connected_at="2026-01-01T00:00:00.000Z",
                     expires_at_epoch=4_000_000_000).save()
    monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    reload_settings()
    task = create_task(api)

    assert statemachine.transition(task, statemachine.RUNNING).status == "running"
    assert TaskRecord.get(task.task_id, consistent_read=True).version == 2


def test_disconnect_removes_the_connection(open_socket) -> None:
    socket = open_socket(DEMO)
    assert len(connections()) == 1

    socket.close()

    wait_for(lambda: connections() == [])


def test_update_carries_presigned_results_and_queue_position(api: Api, open_socket) -> None:
    socket = open_socket(DEMO)
    task = create_task(api)
    bucket = get_settings().media_bucket
    aws.s3().put_object(Bucket=bucket, Key=f"tasks/{task.task_id}/0.png", Body=b"png")

    queued = receive(socket)["data"]  # published when the task was created
    assert queued["status"] == "queued"
    assert queued["queue_position"] == 1
    assert "result_urls" not in queued

    running = statemachine.transition(task, statemachine.RUNNING)
    usage = {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}
    statemachine.transition(running, statemachine.SUCCEEDED, actions=[
        TaskRecord.result_urls.set([f"s3://{bucket}/tasks/{task.task_id}/0.png"]),
        TaskRecord.usage.set(usage), TaskRecord.cost.set(0.25), TaskRecord.currency.set("CNY"),
    ])
    running_update = receive(socket)["data"]
    assert running_update["status"] == "running" and "cost" not in running_update
    succeeded = receive(socket)["data"]
    assert succeeded["status"] == "succeeded"
    assert succeeded["version"] == 3
    assert set(succeeded) == {"id", "status", "version", "updated_at", "result_urls", "cost", "currency", "usage"}
    # Its owner sees what it cost as it finishes, as the task's body says.
    assert (succeeded["cost"], succeeded["currency"], succeeded["usage"]) == (0.25, "CNY", usage)
    [url] = succeeded["result_urls"]
    assert url.startswith("https://") and f"tasks/{task.task_id}/0.png" in url and "Signature" in url
    # A free task's cost of 0 is a cost too.
    free = TaskRecord.get(task.task_id, consistent_read=True)
    free.cost = 0
    assert wiring.current().live.update_body(free)["cost"] == 0


def test_management_api_answers_like_api_gateway(open_socket, gateway: WebSocketGateway) -> None:
    socket = open_socket(DEMO)
    [record] = connections()
    assert "=" in record.connection_id
    client = boto3.client("apigatewaymanagementapi", endpoint_url=gateway.management_url + "/api")

    client.post_to_connection(ConnectionId=record.connection_id, Data=b'{"hello": 1}')
    assert receive(socket) == {"hello": 1}
    assert client.get_connection(ConnectionId=record.connection_id)["Identity"]["SourceIp"] == "127.0.0.1"
    with pytest.raises(client.exceptions.PayloadTooLargeException):
        client.post_to_connection(ConnectionId=record.connection_id, Data=b"x" * (128 * 1024 + 1))

    client.delete_connection(ConnectionId=record.connection_id)
    with pytest.raises(ConnectionClosed):
        socket.recv(timeout=10)
    wait_for(lambda: connections() == [])
    for call in (client.get_connection, client.delete_connection):
        with pytest.raises(client.exceptions.GoneException):
            call(ConnectionId=record.connection_id)
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId=record.connection_id, Data=b"late")


def test_an_update_too_large_for_one_message_arrives_truncated_telling_the_client_to_read_the_task(
    api: Api, open_socket
) -> None:
    socket = open_socket(DEMO)
    long_error, many_long_urls = create_task(api), create_task(api)
    for _ in range(2):
        assert receive(socket)["data"]["status"] == "queued"

    statemachine.transition(statemachine.transition(long_error, statemachine.RUNNING), statemachine.FAILED,
                            actions=[TaskRecord.error.set({"code": "boom", "message": "x" * 150_000})])
    running = statemachine.transition(many_long_urls, statemachine.RUNNING)
    urls = [f"https://results.example.com/{index}/{'a' * 9_000}.jpeg" for index in range(15)]
    statemachine.transition(running, statemachine.SUCCEEDED, actions=[TaskRecord.result_urls.set(urls)])

    updates = []
    for _ in range(4):
        raw = socket.recv(timeout=10)
        assert len(raw.encode()) <= 128 * 1024
        updates.append(json.loads(raw)["data"])
    assert [(update["id"], update["status"]) for update in updates] == [
        (long_error.task_id, "running"), (long_error.task_id, "failed"),
        (many_long_urls.task_id, "running"), (many_long_urls.task_id, "succeeded")]
    for update in (updates[1], updates[3]):
        assert set(update) == {"id", "status", "version", "updated_at", "truncated"} and update["truncated"] is True
    # What the client then reads is whole.
    assert api.request("GET", f"/api/tasks/{many_long_urls.task_id}", as_user=DEMO).data["result_urls"] == urls


def test_the_reply_to_a_bad_message_stays_small_whatever_the_message_holds(open_socket) -> None:
    socket = open_socket(DEMO)
    many_unknown_fields = {f"{index:06d}-{'k' * 33}": 1 for index in range(2_500)}
    message = json.dumps({"action": "ping", **many_unknown_fields})
    assert 100_000 < len(message) < 128 * 1024

    socket.send(message)

    raw = socket.recv(timeout=10)
    reply = json.loads(raw)
    assert reply["error"]["code"] == "invalid_message" and 1 <= len(reply["error"]["details"]) <= 5
    assert len(raw) < 2_000
