"""Where a webhook may go: bad URLs refused with a 400 at creation, and at send time no private, loopback,
link-local, multicast, reserved or metadata address reached, however the name resolves, whatever answer follows
(no redirect followed, the body read capped), and the connection made to the very address that was judged."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import httpx
import pytest

from chalicelib import wiring
from chalicelib.deadline_transport import DeadlineTransport
from chalicelib.webhooks import addresses
from chalicelib.webhooks.addresses import PinnedBackend, UnsafeDestination
from chalicelib.webhooks.sender import MAX_RESPONSE_BYTES, WebhookSender, read_capped
from tests.factories import DEMO, IMAGE_TASK, VIDEO_TASK
from tests.webhooks.conftest import Hooks, Receiver

BAD_ADDRESSES = [
    "10.0.0.7", "172.16.3.4", "192.168.1.1",  # private
    "127.0.0.1", "::1",  # loopback
    "169.254.10.1", "fe80::1",  # link-local
    "169.254.169.254", "fd00:ec2::254",  # cloud metadata (AWS's IMDS, IPv4 and IPv6)
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1", "ff02::1",  # multicast
    "240.0.0.1", "0.0.0.0", "::",  # reserved, unspecified  # noqa: S104 - addresses refused, never bound
    "fd12:3456::1", "fec0::1",  # unique local; site-local (deprecated, still routed inside some networks)
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",  # the metadata address through NAT64 and 6to4
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_no_address_outside_the_public_internet_is_reached(address: str) -> None:
    assert not addresses.address_allowed(addresses.ip_literal(address), allow_loopback=False)
    with pytest.raises(UnsafeDestination):
        addresses.vetted_addresses("hooks.example.com", 443, lambda *_: [address], allow_loopback=False)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "8.8.8.8"])
def test_public_addresses_are_reached(address: str) -> None:
    assert addresses.vetted_addresses("hooks.example.com", 443, lambda *_: [address], allow_loopback=False) == \
        [address]


def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    with pytest.raises(UnsafeDestination):
        addresses.vetted_addresses("hooks.example.com", 443, lambda *_: ["93.184.215.14", "10.0.0.1"],
                                   allow_loopback=False)


def test_the_local_setting_lets_loopback_in_and_nothing_else() -> None:
    assert addresses.vetted_addresses("localhost", 80, lambda *_: ["127.0.0.1", "::1"], allow_loopback=True) == \
        ["127.0.0.1", "::1"]
    for address in ("10.0.0.1", "169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        with pytest.raises(UnsafeDestination):
            addresses.vetted_addresses("localhost", 80, lambda *_, found=address: [found], allow_loopback=True)


def _sender(resolver: Callable[[str, int], list[str]], allow_loopback: bool = False) -> WebhookSender:
    return WebhookSender(allow_loopback=allow_loopback, resolver=resolver)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1"])
def test_a_send_to_a_name_resolving_inside_connects_nowhere(receiver: Receiver, address: str) -> None:
    port = receiver.server.server_address[1]
    answer = _sender(lambda *_: [address]).post(f"https://hooks.example.com:{port}/x", b"{}", {})

    assert (answer.status_code, answer.retryable) == (None, False)
    assert "may not reach" in (answer.error or "")
    assert receiver.received == []


def test_the_connection_goes_to_the_address_judged_with_the_name_kept(receiver: Receiver) -> None:
    """DNS rebinding: the name is resolved once per connection, where it is judged; a second answer is never used.
    The request still names the host (Host header; for https, SNI and the certificate check)."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    asked: list[str] = []

    def rebinding(host: str, _port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    port = receiver.server.server_address[1]
    transport = DeadlineTransport(lambda: None, network_backend=PinnedBackend(rebinding, allow_loopback=True))
    with httpx.Client(transport=transport, trust_env=False) as client:
        assert client.post(f"http://receiver.example.com:{port}/hook", content=b"{}").status_code == 204
    assert asked == ["receiver.example.com"]
    assert receiver.received[0].headers["host"] == f"receiver.example.com:{port}"


def test_redirects_are_not_followed(receivers: Callable[[], Receiver]) -> None:
    first, elsewhere = receivers(), receivers()
    first.answer((307, {"Location": elsewhere.url}))
    answer = _sender(addresses.system_resolver, allow_loopback=True).post(first.url, b"{}", {})

    assert (answer.status_code, answer.retryable, answer.delivered) == (307, False, False)
    assert elsewhere.received == []


def test_an_endless_answer_is_read_only_so_far(receiver: Receiver) -> None:
    receiver.answer((500, {}, b"x" * (4 * MAX_RESPONSE_BYTES)))
    answer = _sender(addresses.system_resolver, allow_loopback=True).post(receiver.url, b"{}", {})
    assert answer.status_code == 500 and answer.retryable
    assert len(answer.error or "") <= 400

    sent = []

    def endless() -> Iterator[bytes]:
        for _ in range(10_000):
            sent.append(1024)
            yield b"y" * 1024

    assert len(read_capped(httpx.Response(500, content=endless()))) == MAX_RESPONSE_BYTES
    assert sum(sent) <= MAX_RESPONSE_BYTES + 1024


def test_without_the_local_setting_a_loopback_receiver_gets_nothing(receiver: Receiver) -> None:
    answer = _sender(addresses.system_resolver).post(receiver.url, b"{}", {})
    assert answer.status_code is None and not answer.retryable
    assert receiver.received == []


@pytest.mark.parametrize(("url", "problem"), [
    ("http://hooks.example.com/x", "https"),
    ("ftp://hooks.example.com/x", "https"),
    ("hooks.example.com/x", "https"),
    ("https://user:secret@hooks.example.com/x", "user name"),
    ("https://hooks.example.com/" + "x" * 2048, "2048"),
    ("https://hooks.example.com/a b", "spaces"),
    ("https://localhost/x", "not this machine"),
    ("https://127.0.0.1:8443/x", "not this machine"),
    ("https://[::1]/x", "not this machine"),
    ("https://10.1.2.3/x", "public address"),
    ("https://169.254.169.254/latest/meta-data", "public address"),
    ("https://[fd00:ec2::254]/x", "public address"),
    ("https://[::ffff:169.254.169.254]/x", "public address"),
    ("https://intranet/x", "fully qualified"),
    ("https://2130706433/x", "fully qualified"),
    ("https://0x7f.1/x", "fully qualified"),
    ("https://metadata.google.internal/x", "private network"),
    ("https://printer.local/x", "private network"),
    ("https://a.localhost/x", "private network"),
    ("https://hooks.example.com:0/x", "port from 1 to 65535"),
    ("https://hooks.example.com:65536/x", "port"),
    ("https://hooks.example.com:99999/x", "port"),
    ("https://under_score.example.com/x", "valid host"),
])
def test_a_bad_webhook_url_is_refused_with_a_clear_400(hooks: Hooks, url: str, problem: str) -> None:
    wiring.install(hooks.services.but(settings=dataclasses.replace(hooks.services.settings,
                                                                   webhook_allow_loopback=False)))
    response = hooks.api.request("POST", "/api/tasks", {**IMAGE_TASK, "webhook_url": url}, as_user=DEMO)

    assert response.status_code == 400, response.body
    [detail] = response.data["error"]["details"]
    assert detail["field"] == "webhook_url" and problem in detail["message"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"webhook_url": "https://hooks.example.com/x", "webhook_events": ["done"]}, "webhook_events[0]"),
    ({"webhook_url": "https://hooks.example.com/x", "webhook_events": []}, "webhook_events"),
    ({"webhook_url": "https://hooks.example.com/x", "webhook_events": "running"}, "webhook_events"),
    ({"webhook_events": ["running"]}, ""),
    ({"webhook_url": 42}, "webhook_url"),
])
def test_bad_webhook_events_are_refused(hooks: Hooks, fields: dict, field: str) -> None:
    response = hooks.api.request("POST", "/api/tasks", {**VIDEO_TASK, **fields}, as_user=DEMO)

    assert response.status_code == 400, response.body
    assert [detail["field"] for detail in response.data["error"]["details"]] == [field]


def test_a_tasks_webhook_is_kept_and_shown(hooks: Hooks) -> None:
    task_id = hooks.create(webhook_url="https://hooks.example.com/arkflow?k=1",
                           webhook_events=["running", "failed", "running"])
    body = hooks.api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data
    assert (body["webhook_url"], body["webhook_events"]) == ("https://hooks.example.com/arkflow?k=1",
                                                             ["running", "failed"])
    plain = hooks.api.request("GET", f"/api/tasks/{hooks.create()}", as_user=DEMO).data
    assert (plain["webhook_url"], plain["webhook_events"]) == (None, None)
    default = hooks.api.request("GET", f"/api/tasks/{hooks.create(webhook_url='https://8.8.8.8/h')}",
                                as_user=DEMO).data
    assert default["webhook_events"] == ["succeeded", "failed", "cancelled", "expired"]
