"""Logging in, tokens and who may call what."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.api_client import Api
from tests.factories import ADMIN, DEMO

SIGNING_KEY = "test-signing-key-with-enough-length-for-hs256"


def login(api: Api, username: str, password: str):
    return api.request("POST", "/api/users/login", {"username": username, "password": password})


def test_health_is_public(api: Api) -> None:
    response = api.request("GET", "/api/health")
    assert response.status_code == 200
    assert response.data == {"status": "ok"}


def test_login_returns_a_token_that_identifies_the_user(api: Api) -> None:
    response = login(api, *DEMO)
    assert response.status_code == 200
    assert response.data["role"] == "user"
    assert response.data["expires_at"].endswith("Z")
    me = api.request("GET", "/api/users/me", token=response.data["token"])
    assert me.status_code == 200
    assert me.data["username"] == "demo"
    assert me.data["role"] == "user"
    assert "password_hash" not in me.data


@pytest.mark.abuse
def test_wrong_password_and_unknown_user_get_the_same_answer(api: Api) -> None:
    wrong = login(api, "demo", "not-the-password")
    unknown = login(api, "nobody-here", "whatever-pass")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.data == unknown.data
    assert wrong.data["error"]["code"] == "invalid_credentials"


@pytest.mark.abuse
def test_unknown_user_costs_the_same_password_check_as_a_wrong_password(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.accounts import auth

    checked: list[str] = []
    real_verify = auth.verify_password

    def counting_verify(password_hash: str, password: str) -> bool:
        checked.append(password_hash)
        return real_verify(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", counting_verify)
    login(api, "demo", "wrong-password-1")
    login(api, "ghost", "wrong-password-1")
    # One argon2 verification each, with the same parameters: the answer time does not tell users apart.
    assert len(checked) == 2
    assert checked[0].split("$")[:4] == checked[1].split("$")[:4]


@pytest.mark.abuse
def test_repeated_failures_are_throttled_even_with_the_right_password(api: Api) -> None:
    for _ in range(5):
        assert login(api, "demo", "bad-password").status_code == 401
    throttled = login(api, *DEMO)
    assert throttled.status_code == 429
    assert throttled.data["error"]["code"] == "too_many_attempts"
    assert int(throttled.headers["Retry-After"]) > 0
    # Another user is unaffected.
    assert login(api, *ADMIN).status_code == 200


def throttled_authenticator(**limits: int) -> Any:
    from chalicelib.accounts.auth import Authenticator
    from chalicelib.settings import get_settings
    from tests.clocks import FrozenClock

    clock = FrozenClock(1_800_000_000.0)
    return Authenticator(dataclasses.replace(get_settings(), **limits), clock), clock


def outcome(authenticator: Any, user: tuple[str, str], source: str | None = None) -> int:
    from chalicelib.errors import ApiError

    try:
        authenticator.login(*user, source) if source else authenticator.login(*user)
    except ApiError as error:
        return error.status
    return 200


@pytest.mark.abuse
def test_forty_guesses_in_flight_at_once_cannot_pass_the_limit(seeded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each guess is counted before its password is checked. Simulated in flight all at once, deterministically:
    every password check lets the next guesses arrive before it answers. The stack test does it with threads."""
    from chalicelib.accounts import auth

    authenticator, _ = throttled_authenticator(login_max_failures=5, login_max_failures_per_user=50)
    real_verify = auth.verify_password
    guesses = [("demo", f"guess-{number}") for number in range(40)]
    checked: list[str] = []
    answers: list[int] = []

    def arrive() -> None:
        while guesses:
            answers.append(outcome(authenticator, guesses.pop()))

    def check_while_more_guesses_arrive(password_hash: str, password: str) -> bool:
        checked.append(password)
        arrive()  # this guess is still being checked
        return real_verify(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", check_while_more_guesses_arrive)
    arrive()

    assert len(checked) == 5
    assert sorted(answers) == [401] * 5 + [429] * 35
    assert outcome(authenticator, DEMO) == 429  # the right password too, until the window ends


@pytest.mark.abuse
def test_guesses_from_elsewhere_do_not_lock_the_owner_out(seeded: None) -> None:
    """Strict per (username, source), looser per username, and a source that logged in before is held to its
    own limit only: an attacker spreading guesses over many addresses locks out new sources, not the owner's."""
    authenticator, clock = throttled_authenticator(login_max_failures=3, login_max_failures_per_user=7,
                                                   login_lockout_s=300)
    home, wrong = "198.51.100.7", ("demo", "wrong-password")
    assert outcome(authenticator, DEMO, home) == 200

    # Strict per pair: the fourth guess from one address is refused, another address may still try.
    assert [outcome(authenticator, wrong, "203.0.113.1") for _ in range(4)] == [401, 401, 401, 429]
    assert [outcome(authenticator, wrong, "203.0.113.2") for _ in range(3)] == [401, 401, 401]
    # Loose per username: 7 failures from anywhere, then even a new address with the right password waits.
    assert [outcome(authenticator, wrong, f"203.0.113.{n}") for n in (3, 4)] == [401, 429]
    assert outcome(authenticator, DEMO, "192.0.2.50") == 429
    # The owner's own address is spared the username's limit, and a success frees its pair at once.
    assert outcome(authenticator, ("demo", "typo"), home) == 401
    assert outcome(authenticator, DEMO, home) == 200
    # IPv6 clients are counted by their /64: rotating addresses inside it does not buy guesses.
    assert outcome(authenticator, wrong, "2001:db8:1:2::1") == 429  # the username's window is still full
    clock.advance(301)
    assert [outcome(authenticator, wrong, f"2001:db8:1:2::{n}") for n in range(1, 5)] == [401, 401, 401, 429]
    assert outcome(authenticator, DEMO, "192.0.2.50") == 200


@pytest.mark.abuse
def test_logout_revokes_the_token(api: Api) -> None:
    token = login(api, *DEMO).data["token"]
    assert api.request("POST", "/api/users/logout", token=token).status_code == 200
    assert api.request("GET", "/api/users/me", token=token).status_code == 401


def _forged(claims: dict, key: str = SIGNING_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


@pytest.mark.abuse
@pytest.mark.parametrize(
    "make_header",
    [
        pytest.param(lambda token: None, id="missing"),
        pytest.param(lambda token: "Token abc", id="wrong-scheme"),
        pytest.param(lambda token: "Bearer ", id="empty"),
        pytest.param(lambda token: "Bearer not.a.jwt", id="malformed"),
        pytest.param(lambda token: "Bearer " + token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"),
                     id="tampered"),
        pytest.param(
            lambda token: "Bearer " + _forged({**jwt.decode(token, options={"verify_signature": False})},
                                              key="another-key-of-sufficient-length-123"),
            id="wrong-key",
        ),
        pytest.param(
            lambda token: "Bearer "
            + jwt.encode({**jwt.decode(token, options={"verify_signature": False})}, None, algorithm="none"),
            id="alg-none",
        ),
        pytest.param(
            lambda token: "Bearer "
            + _forged({**jwt.decode(token, options={"verify_signature": False}), "exp": int(time.time()) - 5}),
            id="expired",
        ),
    ],
)
def test_bad_tokens_are_refused(api: Api, make_header) -> None:
    token = login(api, *DEMO).data["token"]
    header = make_header(token)
    response = api.client.http.get("/api/users/me", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert b'"error"' in response.body


@pytest.mark.abuse
def test_disabling_a_user_ends_their_sessions(api: Api) -> None:
    token = login(api, *DEMO).data["token"]
    assert api.request("PUT", "/api/admin/users/demo", {"disabled": True}, as_user=ADMIN).status_code == 200
    assert api.request("GET", "/api/users/me", token=token).status_code == 401
    assert login(api, *DEMO).status_code == 401


@pytest.mark.abuse
def test_changing_a_password_ends_old_sessions(api: Api) -> None:
    token = login(api, *DEMO).data["token"]
    changed = api.request("PUT", "/api/admin/users/demo", {"password": "brand-new-pass"}, as_user=ADMIN)
    assert changed.status_code == 200
    assert api.request("GET", "/api/users/me", token=token).status_code == 401
    assert login(api, "demo", "brand-new-pass").status_code == 200


@pytest.mark.abuse
def test_users_cannot_reach_admin_routes(api: Api) -> None:
    from app import app

    checked = 0
    for path, methods in app.routes.items():
        if not path.startswith("/api/admin"):
            continue
        for method in methods:
            if method == "OPTIONS":
                continue
            concrete = path.replace("{model_id}", "seedream-4.5").replace("{username}", "demo")
            response = api.request(method, concrete, {}, as_user=DEMO)
            assert response.status_code == 403, (method, path)
            assert response.data["error"]["code"] == "forbidden"
            checked += 1
    assert checked >= 10


def test_admin_manages_users_without_ever_seeing_a_password(api: Api) -> None:
    created = api.request(
        "POST", "/api/admin/users", {"username": "carol", "password": "carol-pass-1"}, as_user=ADMIN
    )
    assert created.status_code == 201
    assert set(created.data) >= {"username", "role", "disabled", "created_at"}
    assert "password" not in created.body.decode() and "argon2" not in created.body.decode()
    duplicate = api.request(
        "POST", "/api/admin/users", {"username": "carol", "password": "carol-pass-2"}, as_user=ADMIN
    )
    assert duplicate.status_code == 409
    listed = api.request("GET", "/api/admin/users", as_user=ADMIN)
    assert "carol" in [user["username"] for user in listed.data["users"]]
    assert "argon2" not in listed.body.decode()
    promoted = api.request("PUT", "/api/admin/users/carol", {"role": "admin"}, as_user=ADMIN)
    assert promoted.data["role"] == "admin"
    assert api.request("DELETE", "/api/admin/users/carol", as_user=ADMIN).status_code == 200
    assert login(api, "carol", "carol-pass-1").status_code == 401


def test_a_deleted_users_tokens_stay_dead_when_the_name_is_used_again(api: Api) -> None:
    token = login(api, *DEMO).data["token"]
    assert api.request("DELETE", "/api/admin/users/demo", as_user=ADMIN).status_code == 200
    recreated = api.request("POST", "/api/admin/users", {"username": "demo", "password": DEMO[1]}, as_user=ADMIN)
    assert recreated.status_code == 201
    assert api.request("GET", "/api/users/me", token=token).status_code == 401


def test_admins_cannot_lock_themselves_out(api: Api) -> None:
    assert api.request("PUT", "/api/admin/users/admin", {"disabled": True}, as_user=ADMIN).status_code == 409
    assert api.request("DELETE", "/api/admin/users/admin", as_user=ADMIN).status_code == 409


@pytest.fixture
def fresh_stage(aws_resources: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API of a deployment with no accounts yet, whose first admin is ROOT; each test starts as a new
    container would (it has not looked for its first admin yet)."""
    from chalice.test import Client

    from app import app
    from chalicelib.accounts import first_admin

    monkeypatch.setenv("ADMIN_USERNAME", ROOT[0])
    monkeypatch.setenv("ADMIN_PASSWORD", ROOT[1])
    first_admin.ensure_first_admin.cache_clear()
    with Client(app) as client:
        yield Api(client)


ROOT = ("root", "root-password")


def test_the_first_admin_comes_from_the_environment_once_and_stays_deleted(
    fresh_stage: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.accounts import first_admin

    first = login(fresh_stage, *ROOT)
    assert (first.status_code, first.data["role"]) == (200, "admin")
    second = {"username": "second", "password": "second-pass", "role": "admin"}
    assert fresh_stage.request("POST", "/api/admin/users", second, as_user=ROOT).status_code == 201
    assert fresh_stage.request("DELETE", "/api/admin/users/root", as_user=("second", "second-pass")).status_code \
        == 200

    first_admin.ensure_first_admin.cache_clear()  # a fresh container (or a later deploy)
    assert login(fresh_stage, *ROOT).status_code == 401
    assert login(fresh_stage, "second", "second-pass").status_code == 200


def test_a_stage_that_has_accounts_does_not_make_its_first_admin_again(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage bootstrapped before first-run steps were recorded: its first admin, if gone, stays gone."""
    from chalicelib.accounts import first_admin

    monkeypatch.setenv("ADMIN_USERNAME", ROOT[0])
    monkeypatch.setenv("ADMIN_PASSWORD", ROOT[1])
    first_admin.ensure_first_admin.cache_clear()
    assert login(api, *ROOT).status_code == 401
    from chalicelib.store import first_run

    assert first_run.marked([first_admin.FIRST_ADMIN])


def test_the_first_admin_is_made_once_even_when_containers_start_together(
    aws_resources: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two containers that both saw no marker: one transaction writes the marker and the admin, the other changes
    nothing, and no later container makes the admin again once it is deleted."""
    from chalicelib.accounts import first_admin
    from chalicelib.store import first_run
    from chalicelib.store.records import UserRecord

    monkeypatch.setenv("ADMIN_USERNAME", ROOT[0])
    monkeypatch.setenv("ADMIN_PASSWORD", ROOT[1])
    monkeypatch.setattr(first_run, "marked", lambda _ids: set())  # both looked before either wrote
    first_admin._create_first_admin(ROOT[0], ROOT[1])
    created = UserRecord.get(ROOT[0], consistent_read=True)
    first_admin._create_first_admin(ROOT[0], ROOT[1])
    assert UserRecord.get(ROOT[0], consistent_read=True).user_id == created.user_id  # the second made nothing
    monkeypatch.undo()
    created.delete()
    monkeypatch.setenv("ADMIN_USERNAME", ROOT[0])
    monkeypatch.setenv("ADMIN_PASSWORD", ROOT[1])
    first_admin._create_first_admin(ROOT[0], ROOT[1])
    assert next(iter(UserRecord.scan()), None) is None


def test_malformed_json_gets_the_error_body(api: Api) -> None:
    response = api.request("POST", "/api/users/login", raw="{not json")
    assert response.status_code == 400
    assert response.data["error"]["code"] == "malformed_json"


def test_cors_follows_the_configured_origins(api: Api) -> None:
    allowed = api.client.http.get("/api/health", headers={"Origin": "http://127.0.0.1:8080"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"
    other = api.client.http.get("/api/health", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = api.client.http.request(
        "OPTIONS", "/api/tasks", headers={"Origin": "http://127.0.0.1:8080"}, body=b""
    )
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
