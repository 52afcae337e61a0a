"""Logging in, tokens and who may call what."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.conftest import ADMIN, DEMO, Api

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
    from chalicelib import auth

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


def test_first_admin_comes_from_the_environment(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import seed

    monkeypatch.setenv("ADMIN_USERNAME", "root")
    monkeypatch.setenv("ADMIN_PASSWORD", "root-password")
    monkeypatch.setattr(seed, "_first_admin_checked", False)
    response = login(api, "root", "root-password")
    assert response.status_code == 200
    assert response.data["role"] == "admin"


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
