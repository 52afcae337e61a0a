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
        if user[0] not in self.tokens:
            response = self.request("POST", "/api/users/login", {"username": user[0], "password": user[1]})
            assert response.status_code == 200, response.body
            self.tokens[user[0]] = response.data["token"]
        return self.tokens[user[0]]
