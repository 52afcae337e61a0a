"""Secrets are read at run time from Secrets Manager, a copy kept per container for minutes at most, so a value
rotated in Secrets Manager reaches warm containers without a deploy (CloudFormation never re-resolves one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from chalicelib import secret_store
from chalicelib.ark.client import VolcVideoClient
from chalicelib.secret_store import RETRY_AFTER_FAILURE_S, SECRET_TTL_S, SecretStore, SecretUnavailable
from chalicelib.settings import DEV_SIGNING_KEY, Settings

SECRET_ID = "arkflow-test/app-secrets"
SECRETS = {"ARK_API_KEY": "ark-key-1", "TOKEN_SIGNING_KEY": "signing-key-1" * 4, "ADMIN_PASSWORD": "first-admin"}
SECRET_NAMES = ("ARK_API_KEY", "TOKEN_SIGNING_KEY", "ADMIN_PASSWORD", "INTERNAL_SERVICE_TOKEN")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in SECRET_NAMES:  # on AWS no secret is in the environment
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        client = boto3.client("secretsmanager")
        client.create_secret(Name=SECRET_ID, SecretString=json.dumps(SECRETS))
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(secretsmanager: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> SecretStore:
    """The container's store, on a clock the test moves."""
    calls = {"reads": 0}

    def client() -> Any:
        calls["reads"] += 1
        return secretsmanager

    store = SecretStore(SECRET_ID, client=client, clock=clock)
    store.reads = calls  # type: ignore[attr-defined]
    monkeypatch.setattr(secret_store, "store", lambda secret_id: store if secret_id == SECRET_ID else None)
    return store


def rotate(secretsmanager: Any, **changes: str) -> None:
    secretsmanager.put_secret_value(SecretId=SECRET_ID, SecretString=json.dumps({**SECRETS, **changes}))


def test_a_rotated_secret_reaches_a_warm_container_within_the_cache_time(store, secretsmanager, clock) -> None:
    settings = Settings(secret_id=SECRET_ID)
    assert settings.token_signing_key == SECRETS["TOKEN_SIGNING_KEY"]
    rotate(secretsmanager, TOKEN_SIGNING_KEY="signing-key-2" * 4)
    clock.now += SECRET_TTL_S - 1
    assert settings.token_signing_key == SECRETS["TOKEN_SIGNING_KEY"]  # the container's copy, no read per request
    assert store.reads["reads"] == 1
    clock.now += 1
    assert settings.token_signing_key == "signing-key-2" * 4
    assert SECRET_TTL_S <= 300  # "a few minutes" is the longest a rotation may take to arrive


def test_the_ark_client_made_once_per_container_sends_the_rotated_key(store, secretsmanager, clock) -> None:
    seen: list[str] = []

    def ark(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"items": [], "total": 0})

    client = VolcVideoClient.from_settings(Settings(secret_id=SECRET_ID, ark_base_url="https://ark.invalid/api/v3"))
    client._http = httpx.Client(transport=httpx.MockTransport(ark))
    client.list_tasks()
    rotate(secretsmanager, ARK_API_KEY="ark-key-2")
    clock.now += SECRET_TTL_S
    client.list_tasks()
    assert seen == ["Bearer ark-key-1", "Bearer ark-key-2"]


def test_secrets_manager_failing_keeps_the_copy_held_and_asks_again_soon(store, secretsmanager, clock) -> None:
    assert store.get("ARK_API_KEY") == "ark-key-1"
    secretsmanager.delete_secret(SecretId=SECRET_ID, ForceDeleteWithoutRecovery=True)
    clock.now += SECRET_TTL_S
    assert store.get("ARK_API_KEY") == "ark-key-1"
    reads = store.reads["reads"]
    clock.now += RETRY_AFTER_FAILURE_S - 1
    store.get("ARK_API_KEY")
    assert store.reads["reads"] == reads
    clock.now += 1
    store.get("ARK_API_KEY")
    assert store.reads["reads"] == reads + 1


def test_a_missing_secret_or_key_fails_instead_of_falling_back(store, secretsmanager) -> None:
    settings = Settings(secret_id=SECRET_ID)
    assert settings.internal_service_token == ""  # optional: that feature is off
    rotate(secretsmanager, TOKEN_SIGNING_KEY="")
    fresh = SecretStore(SECRET_ID, client=lambda: secretsmanager)
    with pytest.raises(SecretUnavailable, match="TOKEN_SIGNING_KEY"):
        fresh.get("TOKEN_SIGNING_KEY")
    missing = SecretStore("arkflow-test/no-such-secret", client=lambda: secretsmanager)
    with pytest.raises(SecretUnavailable):
        missing.get("ARK_API_KEY")
    assert Settings(secret_id="").token_signing_key == DEV_SIGNING_KEY  # only a laptop without a secret


def test_secret_values_are_neither_shown_nor_kept_in_settings(store) -> None:
    settings = Settings(secret_id=SECRET_ID)
    assert settings.ark_api_key == SECRETS["ARK_API_KEY"]
    assert all(value not in repr(settings) for value in SECRETS.values())
    assert all(value not in json.dumps(vars(settings), default=str) for value in SECRETS.values())


def test_an_environment_variable_or_an_explicit_value_wins(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The laptop and the tests: no secret to read."""
    monkeypatch.setenv("ARK_API_KEY", "from-the-environment")
    assert Settings(secret_id=SECRET_ID).ark_api_key == "from-the-environment"
    assert Settings(secret_id=SECRET_ID, ark_api_key="given").ark_api_key == "given"
    assert store.reads["reads"] == 0
