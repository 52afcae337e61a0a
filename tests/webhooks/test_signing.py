"""Each user's webhook secret: made at its first read, the same on every read, replaced by a rotation after which
both sign for a day, and what every webhook is signed with (Standard Webhooks, checked with its own library)."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from chalicelib.webhooks import delivery, secrets
from chalicelib.webhooks.secrets import WebhookSecrets
from tests.factories import DEMO, OTHER, user_id_of
from tests.webhooks.conftest import Hooks, Received, Receiver


def test_the_secret_is_made_at_its_first_read_and_kept(hooks: Hooks) -> None:
    secret = hooks.secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert hooks.secret() == secret
    assert hooks.secret(OTHER) != secret
    assert hooks.api.request("GET", "/api/webhooks/secret").status_code == 401


def test_parallel_first_reads_agree_on_one_secret(hooks: Hooks) -> None:
    user_id = user_id_of(DEMO[0])
    with ThreadPoolExecutor(8) as pool:
        found = set(pool.map(lambda _: WebhookSecrets(hooks.clock).current(user_id), range(8)))
    assert len(found) == 1


def test_a_signature_verifies_with_the_standard_webhooks_library(hooks: Hooks, receiver: Receiver) -> None:
    hooks.succeed(hooks.create(webhook_url=receiver.url))
    hooks.deliver()
    [got] = receiver.received

    assert Webhook(hooks.secret()).verify(got.body, got.headers)["type"] == "task.succeeded"
    assert got.headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):
        Webhook(hooks.secret(OTHER)).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(hooks.secret()).verify(got.body.replace(b"succeeded", b"failed"), got.headers)


def test_the_rotate_route_answers_the_new_secret(hooks: Hooks) -> None:
    old = hooks.secret()
    rotated = hooks.api.request("POST", "/api/webhooks/secret/rotate", as_user=DEMO)
    assert rotated.status_code == 200
    assert rotated.data["secret"] != old and hooks.secret() == rotated.data["secret"]
    assert hooks.secret(OTHER) != old
    assert WebhookSecrets(hooks.clock).signing(user_id_of(DEMO[0])) == [rotated.data["secret"], old]


def _signed_by(received: Received, secret: str) -> bool:
    """Whether one of the webhook's signatures is `secret`'s (checked apart from the library's 5-minute window on
    the timestamp, for a webhook sent at a moved clock's time)."""
    timestamp = datetime.fromtimestamp(int(received.headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(secret).sign(received.headers["webhook-id"], timestamp, received.body.decode())
    return expected in received.headers["webhook-signature"].split(" ")


def test_after_a_rotation_both_secrets_sign_for_a_day_then_only_the_new_one(hooks: Hooks, receiver: Receiver) -> None:
    user_id = user_id_of(DEMO[0])
    service = WebhookSecrets(hooks.clock)
    old = service.current(user_id)
    new = service.rotate(user_id)
    during, after = hooks.create(webhook_url=receiver.url), hooks.create(webhook_url=receiver.url)

    hooks.clock.advance(60)
    hooks.succeed(during)
    hooks.deliver()
    [signed_during] = receiver.received
    assert len(signed_during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # either secret verifies it, with the library's own check
        assert Webhook(secret).verify(signed_during.body, signed_during.headers)["data"]["id"] == during

    hooks.clock.advance(secrets.PREVIOUS_SECRET_LIFETIME_S)
    hooks.succeed(after)
    hooks.deliver()
    signed_after = receiver.received[-1]
    assert len(signed_after.headers["webhook-signature"].split(" ")) == 1
    assert _signed_by(signed_after, new) and not _signed_by(signed_after, old)


def test_a_second_rotation_drops_the_first_secret_at_once(hooks: Hooks) -> None:
    user_id = user_id_of(DEMO[0])
    service = WebhookSecrets(hooks.clock)
    first = service.current(user_id)
    second = service.rotate(user_id)
    third = service.rotate(user_id)
    assert service.signing(user_id) == [third, second]
    assert first not in service.signing(user_id)


def test_parallel_rotations_leave_two_secrets_signing_each_one_answered(hooks: Hooks) -> None:
    user_id = user_id_of(DEMO[0])
    old = WebhookSecrets(hooks.clock).current(user_id)
    with ThreadPoolExecutor(6) as pool:
        answers = set(pool.map(lambda _: WebhookSecrets(hooks.clock).rotate(user_id), range(6)))
    signing = WebhookSecrets(hooks.clock).signing(user_id)
    # Two sign at most: the last rotation's and the one it replaced (rotations that met were answered alike).
    assert len(signing) == 2 and signing[0] in answers and signing[1] in {*answers, old}


def test_the_signature_header_carries_one_v1_signature_per_secret() -> None:
    keys = [secrets.new_secret(), secrets.new_secret()]
    header = delivery.signature(keys, "msg_x", 1_700_000_000, '{"a":1}')
    parts = header.split(" ")
    assert len(parts) == 2 and all(part.startswith("v1,") for part in parts)
    for key in keys:
        expected = Webhook(key).sign("msg_x", datetime.fromtimestamp(1_700_000_000, tz=UTC), '{"a":1}')
        assert expected in parts
