"""The per-model circuit breaker in the lanes (docs/design.md, "Circuit breaker"): Ark's 429s open it, tasks wait
parked without using receives, slots or deadline, one probe half-opens it, and its outcome closes or re-opens it;
a circuit open too long fails the waiting tasks with their quota back; an admin can close it by hand."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest

from chalicelib import catalog
from chalicelib.accounts.users import update_user
from chalicelib.ark.client import VolcImageClient, VolcVideoClient
from chalicelib.ark.errors import ArkServerError
from chalicelib.lanes.circuit import Breaker, waited_on_circuit
from chalicelib.lanes.waits import Waker
from chalicelib.live import LiveUpdates
from chalicelib.schemas import UserUpdate
from chalicelib.settings import get_settings
from chalicelib.store import slots
from chalicelib.store.records import ModelRecord, SlotRecord, TaskRecord
from chalicelib.wiring import Wiring
from tests.clocks import FrozenClock
from tests.factories import ADMIN, DEMO, IMAGE_MODEL, IMAGE_TASK, OTHER, VIDEO_MODEL, VIDEO_TASK, principal_of
from tests.lane_fixtures import ARK_KEY, Lanes

THRESHOLD, COOLDOWN_S = 3, 60


@pytest.fixture
def breaking(lanes: Lanes) -> Lanes:
    """The lanes with a circuit that opens after 3 failures and lets a probe out a minute later."""
    return dataclasses.replace(lanes, settings=dataclasses.replace(
        lanes.settings, circuit_threshold=THRESHOLD, circuit_window_s=60, circuit_cooldown_s=COOLDOWN_S,
        circuit_max_open_s=30 * 60))


def _circuit(lanes: Lanes) -> dict[str, Any]:
    response = lanes.api.request("GET", f"/api/admin/models/{IMAGE_MODEL}", as_user=ADMIN)
    assert response.status_code == 200, response.body
    return response.data["circuit"]


def _statuses(lanes: Lanes, task_ids: list[str]) -> list[str]:
    return [lanes.task(task_id).status for task_id in task_ids]


def _used_today(lanes: Lanes) -> int:
    model = ModelRecord.get(IMAGE_MODEL)
    return catalog.usage_today(model, lanes.clock.now(), get_settings().quota_timezone)["used"]


def _open_circuit(lanes: Lanes) -> None:
    """Ark's failures as the lanes count them, without the calls."""
    breaker, failing = lanes.wiring().breaker, TaskRecord("tsk_failing", model_id=IMAGE_MODEL)
    for _ in range(THRESHOLD):
        breaker.failed(failing, ArkServerError("InternalServiceError", "down", 500))


def _drain(lanes: Lanes) -> None:
    """Run the lane until no message is visible."""
    for _ in range(10):
        records = lanes.receive("image")
        if not records:
            return
        lanes.worker("image").handle(records)
    raise AssertionError("the lane did not drain")


def test_429s_open_the_circuit_tasks_wait_parked_and_probes_reopen_then_close_it(breaking: Lanes) -> None:
    lanes = breaking
    lanes.set_model(IMAGE_MODEL, concurrency=4)
    lanes.ark.configure(rate_limit_fraction=1.0, retry_after_s=0)
    first = [lanes.submit(IMAGE_TASK) for _ in range(THRESHOLD)]
    lanes.run("image")
    assert lanes.ark_calls("images.generate") == THRESHOLD
    circuit = _circuit(lanes)
    assert circuit["state"] == "open" and "429" in circuit["reason"] and circuit["since"]

    # Open: a new task and the retried ones wait parked; nothing reaches Ark, no slot is held, no message is left
    # to be received again (so none of them nears the DLQ), and nothing fails.
    waiting = [*first, lanes.submit(IMAGE_TASK)]
    _drain(lanes)
    assert lanes.ark_calls("images.generate") == THRESHOLD
    assert _statuses(lanes, waiting) == ["queued"] * len(waiting)
    assert all(lanes.task(task_id).parked_model == IMAGE_MODEL for task_id in waiting)
    assert slots.in_use(IMAGE_MODEL) == 0

    # After the cool-down the sweeper lets exactly one probe out, and its 429 re-opens the circuit.
    lanes.clock.advance(COOLDOWN_S + 1)
    lanes.sweeper().sweep()
    assert _circuit(lanes)["state"] == "half_open"
    probe = lanes.receive("image")
    assert len(probe) == 1 and slots.in_use(IMAGE_MODEL) == 1
    lanes.worker("image").handle(probe)
    assert lanes.ark_calls("images.generate") == THRESHOLD + 1
    reopened = _circuit(lanes)
    assert reopened["state"] == "open" and reopened["since"] > circuit["since"]

    # Ark recovers: the next probe (the failed probe's retry, after the cool-down) closes the circuit, and every
    # waiting task runs, once each.
    lanes.ark.configure(rate_limit_fraction=0.0)
    lanes.clock.advance(COOLDOWN_S + 1)
    _drain(lanes)
    assert _circuit(lanes)["state"] == "closed"
    assert _statuses(lanes, waiting) == ["succeeded"] * len(waiting)
    assert lanes.ark_calls("images.generate") == THRESHOLD + 1 + len(waiting)
    assert slots.in_use(IMAGE_MODEL) == 0


def test_a_circuit_open_past_its_maximum_fails_the_waiting_tasks_with_their_quota_back(breaking: Lanes) -> None:
    # No probe goes out in this test: the circuit stays open. The deadline is shorter than the wait.
    lanes = dataclasses.replace(breaking, settings=dataclasses.replace(
        breaking.settings, circuit_cooldown_s=10**6, task_deadline_s=600))
    lanes.ark.configure(rate_limit_fraction=1.0, retry_after_s=0)
    waiting = [lanes.submit(IMAGE_TASK) for _ in range(THRESHOLD)]
    _drain(lanes)
    assert _circuit(lanes)["state"] == "open" and _used_today(lanes) == len(waiting)

    # Past their deadline, but all of it spent on the open circuit, short of its maximum: they still wait.
    lanes.clock.advance(29 * 60)
    lanes.sweeper().sweep()
    assert _statuses(lanes, waiting) == ["queued"] * len(waiting)

    lanes.clock.advance(2 * 60)
    report = lanes.sweeper().sweep()
    assert report.circuit_failed == len(waiting)
    for task_id in waiting:
        body = lanes.get(task_id)
        assert body["status"] == "failed" and body["error"]["code"] == "upstream_unavailable"
    assert _used_today(lanes) == 0  # every quota request given back
    assert SlotRecord.get(IMAGE_MODEL).parked == 0


def test_the_time_a_task_waited_on_a_circuit_is_what_its_deadline_leaves_out() -> None:
    outages = [[100.0, 200.0], [300.0, 350.0]]
    assert waited_on_circuit(outages, since=0, now=1000) == 150
    assert waited_on_circuit(outages, since=150, now=320) == 70  # only the parts after it was created, until now
    assert waited_on_circuit([], since=0, now=1000) == 0


def test_an_admin_closes_the_circuit_by_hand_and_the_waiting_tasks_run(breaking: Lanes) -> None:
    lanes = breaking
    _open_circuit(lanes)
    waiting = [lanes.submit(IMAGE_TASK) for _ in range(2)]
    _drain(lanes)
    assert _circuit(lanes)["state"] == "open" and _statuses(lanes, waiting) == ["queued"] * 2

    closed = lanes.api.request("POST", f"/api/admin/models/{IMAGE_MODEL}/circuit/close", as_user=ADMIN)
    assert closed.status_code == 200, closed.body
    assert closed.data["circuit"]["state"] == "closed" and closed.data["circuit"]["reason"] == "closed by an admin"
    again = lanes.api.request("POST", f"/api/admin/models/{IMAGE_MODEL}/circuit/close", as_user=ADMIN)
    assert again.status_code == 200 and again.data["circuit"] == closed.data["circuit"]  # nothing more to do
    trail = lanes.api.request("GET", f"/api/admin/audit?target=model:{IMAGE_MODEL}", as_user=ADMIN).data["entries"]
    closes = [entry for entry in trail if entry["action"] == "circuit.close"]
    assert closes and all(entry["actor"] == ADMIN[0] for entry in closes)
    assert (closes[-1]["before"]["state"], closes[-1]["after"]["state"]) == ("open", "closed")  # the first close
    _drain(lanes)
    assert _statuses(lanes, waiting) == ["succeeded"] * len(waiting)

    unknown = lanes.api.request("POST", "/api/admin/models/no-such-model/circuit/close", as_user=ADMIN)
    assert unknown.status_code == 404 and unknown.data["error"]["code"] == "model_not_found"
    assert lanes.api.request("POST", f"/api/admin/models/{IMAGE_MODEL}/circuit/close").status_code == 401


class RecordingGateway:
    """API Gateway's management API as the publisher uses it: what was posted to which connection."""

    class exceptions:
        GoneException = type("GoneException", (Exception,), {})

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []

    def post_to_connection(self, ConnectionId: str, Data: bytes) -> None:
        self.posted.append((ConnectionId, json.loads(Data)))

    def delete_connection(self, ConnectionId: str) -> None:
        pass


def test_every_admin_connection_is_told_when_a_circuit_changes_and_no_one_else(seeded: None) -> None:
    gateway = RecordingGateway()
    settings = dataclasses.replace(get_settings(), websocket_management_url="http://gateway.invalid",
                                   circuit_threshold=1)
    live = LiveUpdates(Wiring(settings).bodies, settings=settings, client_for=lambda _endpoint: gateway)
    for connection_id, user in (("admin-1=", ADMIN), ("admin-2=", ADMIN), ("demo-1=", DEMO)):
        event = connect_event(live.tickets.issue(principal_of(user)).ticket, connection_id)
        assert live.connect(event)["statusCode"] == 200
    clock = FrozenClock()
    breaker = Breaker(settings=settings, clock=clock, waker=Waker(sqs=None, clock=clock, settings=settings),
                      announce=live.publish_circuit)

    breaker.failed(TaskRecord("tsk_failing", model_id=IMAGE_MODEL), ArkServerError("InternalServiceError", "", 500))
    breaker.close(IMAGE_MODEL)

    events = [(connection, message["type"], message["data"]["model_id"], message["data"]["circuit"]["state"])
              for connection, message in gateway.posted]
    assert sorted(events) == sorted(
        (connection, "circuit", IMAGE_MODEL, state) for connection in ("admin-1=", "admin-2=")
        for state in ("open", "closed"))
    live.disconnect({"requestContext": {"connectionId": "admin-1="}})
    assert [copy.removesuffix("#admin") for copy in live.connections.of_user("#admins")] == ["admin-2="]

    # An admin demoted: their connections close, the copy among the admins' with them.
    update_user(principal_of(ADMIN), OTHER[0], UserUpdate(role="admin"), sockets=live)
    assert live.connect(connect_event(live.tickets.issue(principal_of(OTHER)).ticket, "other-1="))["statusCode"] == 200
    assert len(live.connections.of_user("#admins")) == 2
    update_user(principal_of(ADMIN), OTHER[0], UserUpdate(role="user"), sockets=live)
    assert [copy.removesuffix("#admin") for copy in live.connections.of_user("#admins")] == ["admin-2="]


def test_an_admin_demoted_while_connecting_is_not_among_the_admins(seeded: None) -> None:
    """The demotion lands between the connect's read of the account and its connection's write: the demotion
    found no connection to close, so the connect itself must not leave one among the admins'."""
    gateway = RecordingGateway()
    settings = dataclasses.replace(get_settings(), websocket_management_url="http://gateway.invalid")
    live = LiveUpdates(Wiring(settings).bodies, settings=settings, client_for=lambda _endpoint: gateway)
    update_user(principal_of(ADMIN), OTHER[0], UserUpdate(role="admin"), sockets=live)
    ticket = live.tickets.issue(principal_of(OTHER)).ticket
    store = live.connections.open
    demoted: list[bool] = []

    def demoted_first(connection_id: str, owner: str, session_id: str | None) -> None:
        if not demoted:
            demoted.append(True)
            update_user(principal_of(ADMIN), OTHER[0], UserUpdate(role="user"), sockets=live)
        store(connection_id, owner, session_id)

    live.connections.open = demoted_first  # type: ignore[method-assign]
    assert live.connect(connect_event(ticket, "other-1="))["statusCode"] == 200
    assert demoted and live.connections.of_user("#admins") == []


def connect_event(ticket: str, connection_id: str) -> dict[str, Any]:
    return {"headers": {}, "queryStringParameters": {"ticket": ticket},
            "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": connection_id,
                               "domainName": "127.0.0.1:8001", "stage": "api", "apiId": "local"}}


@pytest.mark.parametrize(("lane", "failure"), [("image", httpx.ReadTimeout), ("video", httpx.ConnectError)])
def test_ark_calls_without_an_answer_count_as_5xx_and_open_the_circuit(breaking: Lanes, lane: str,
                                                                       failure: type[httpx.TransportError]) -> None:
    def unanswered(request: httpx.Request) -> httpx.Response:
        raise failure("no answer", request=request)

    silent = httpx.Client(transport=httpx.MockTransport(unanswered))
    model_id, body = (IMAGE_MODEL, IMAGE_TASK) if lane == "image" else (VIDEO_MODEL, VIDEO_TASK)
    client = {"image_client": VolcImageClient(breaking.ark.base_url, ARK_KEY, http=silent)} if lane == "image" else {
        "video_client": VolcVideoClient(breaking.ark.base_url, ARK_KEY, http=silent)}
    waiting = [breaking.submit(body) for _ in range(THRESHOLD)]
    breaking.run(lane, **client)
    assert not {"failed", "succeeded"} & set(_statuses(breaking, waiting))  # retried (a video: reconciled), none lost
    model = breaking.api.request("GET", f"/api/admin/models/{model_id}", as_user=ADMIN).data
    code = "RequestTimeout" if failure is httpx.ReadTimeout else "ConnectionError"
    assert model["circuit"]["state"] == "open" and code in model["circuit"]["reason"]
    metrics = breaking.api.request("GET", "/api/admin/metrics?window=1h", as_user=ADMIN)
    figures = next(entry for entry in metrics.data["models"] if entry["model_id"] == model_id)
    assert (figures["ark_429"], figures["ark_5xx"]) == (0, THRESHOLD)
