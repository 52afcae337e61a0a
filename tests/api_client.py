"""The app's REST routes in-process: Chalice's test client with JSON helpers and a remembered token per user."""

from __future__ import annotations

import json
from typing import Any

from chalice.test import Client


class Api:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.tokens: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        as_user: tuple[str, str] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | str | None = None,
    ) -> Any:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if as_user:
            token = self.token(as_user)
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        response = self.client.http.request(method, path, headers=all_headers, body=payload)
        response.data = json.loads(response.body) if response.body else None
        return response

    def token(self, user: tuple[str, str]) -> str:
        """A session token of `user`, as a login would issue it (tests of the login itself call its route)."""
        if user[0] not in self.tokens:
            self.tokens[user[0]] = issue_token(*user)
        return self.tokens[user[0]]


def issue_token(username: str, password: str) -> str:
    """What `POST /api/users/login` answers a right password with, from the current container's authenticator (its
    settings and clock): the first admin made if due, the password checked, a session written. The login
    throttle's writes are left out, some ten DynamoDB calls of every test that acts as a user: what the throttle
    counts is what its own tests check through the route."""
    from chalicelib import wiring
    from chalicelib.accounts.auth import verify_password
    from chalicelib.accounts.first_admin import ensure_first_admin
    from chalicelib.store.records import UserRecord

    ensure_first_admin()
    user = UserRecord.get(username, consistent_read=True)
    assert verify_password(user.password_hash, password) and not user.disabled, f"{username} cannot log in"
    return wiring.current().authenticator._issue(user).token
