"""Nothing leaks: a scripted session's every response and log line is scanned for secrets."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.accounts import users
from chalicelib.settings import get_settings
from chalicelib.store.records import UserRecord
from tests.factories import ADMIN, DEMO, IMAGE_TASK, OTHER, png_data_uri
from tests.factories import SHORT_VIDEO_TASK as VIDEO_TASK
from tests.lane_fixtures import ARK_KEY, Lanes

pytestmark = pytest.mark.abuse

CAROL_PASSWORDS = ("carol-first-secret-1", "carol-second-secret-2")
GUESSED_PASSWORD = "guessed-wrong-password-9"


class Recorded:
    """Every response the session got, with what it was asked."""

    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self.responses: list[tuple[str, str, Any]] = []
        real_request = lanes.api.request

        def request(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
            response = real_request(method, path, *args, **kwargs)
            self.responses.append((method, path, response))
            return response

        lanes.api.request = request  # type: ignore[method-assign]

    def texts(self, *, except_logins: bool = False) -> list[tuple[str, str]]:
        return [(f"{method} {path}", f"{response.headers}\n{response.body.decode(errors='replace')}")
                for method, path, response in self.responses
                if not (except_logins and path == "/api/users/login")]


def run_session(lanes: Lanes, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A day of use, from every kind of client; returns the secrets it handled (name -> value)."""
    api = lanes.api
    secrets = {"admin password": ADMIN[1], "demo password": DEMO[1], "other password": OTHER[1],
               "guessed password": GUESSED_PASSWORD, "carol password 1": CAROL_PASSWORDS[0],
               "carol password 2": CAROL_PASSWORDS[1], "token signing key": get_settings().token_signing_key,
               "Ark API key": ARK_KEY}
    image = png_data_uri(96, 96)
    secrets["base64 image body"] = image.split(",", 1)[1][40:120]

    assert api.request("POST", "/api/users/login", {"username": "demo", "password": GUESSED_PASSWORD}).status_code \
        == 401
    assert api.request("POST", "/api/users/login", {"username": "nobody", "password": GUESSED_PASSWORD}).status_code \
        == 401
    for name, token in (("admin token", api.token(ADMIN)), ("demo token", api.token(DEMO)),
                        ("other token", api.token(OTHER))):
        secrets[name] = token
    api.request("POST", "/api/admin/users", {"username": "carol", "password": CAROL_PASSWORDS[0]}, as_user=ADMIN)
    api.request("PUT", "/api/admin/users/carol", {"password": CAROL_PASSWORDS[1]}, as_user=ADMIN)
    api.request("POST", "/api/admin/users", {"username": "x", "password": "short"}, as_user=ADMIN)  # refused
    api.request("GET", "/api/admin/users", as_user=ADMIN)
    api.request("GET", "/api/users/me", as_user=DEMO)

    image_task = api.request("POST", "/api/tasks", {**IMAGE_TASK, "images": [image]}, as_user=DEMO).data["id"]
    api.request("POST", "/api/tasks", {**IMAGE_TASK, "images": [image[:-8] + "*bad*bad"]}, as_user=DEMO)
    lanes.run("image")
    video_task = api.request("POST", "/api/tasks", VIDEO_TASK, as_user=DEMO).data["id"]
    lanes.run("video")
    external_id = lanes.task(video_task).external_id
    callback_url = lanes.ark.sim.tasks.tasks[external_id].callback_url
    secrets["callback secret"] = parse_qs(urlsplit(callback_url).query)["token"][0]
    payload = lanes.ark.sim.tasks.tasks[external_id].to_wire()
    api.request("POST", f"/api/queue/callback?task_id={video_task}&token=wrong", payload)
    api.request("POST", f"/api/queue/callback?task_id={video_task}&token={secrets['callback secret']}", payload)
    for path in (f"/api/tasks/{image_task}", f"/api/tasks/{video_task}", "/api/tasks"):
        api.request("GET", path, as_user=DEMO)
    api.request("GET", "/api/admin/tasks", as_user=ADMIN)
    api.request("GET", "/api/admin/models", as_user=ADMIN)
    api.request("GET", f"/api/tasks/{image_task}", as_user=OTHER)
    api.request("GET", "/api/users/me", token=secrets["demo token"][:-4] + "AAAA")

    def broken(username: str) -> Any:
        raise RuntimeError(f"internal detail: the lookup of {username} hit a bug")

    monkeypatch.setattr(users, "get_user", broken)
    assert api.request("GET", "/api/users/me", as_user=DEMO).status_code == 500
    monkeypatch.undo()
    api.request("POST", "/api/users/logout", as_user=DEMO)

    secrets["an unexpected error's text"] = "internal detail"
    for user in UserRecord.scan():
        secrets[f"password hash of {user.username}"] = user.password_hash
    return secrets


def test_no_response_or_log_line_carries_a_secret_or_a_traceback(
    lanes: Lanes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Safeguards: passwords only ever hashed and never returned or logged; hashes, tokens, the signing and API
    keys and callback secrets never echoed; inline images stored, never handed back as base64; unexpected
    errors answered with a generic 500; validation messages never repeat the value."""
    caplog.set_level(logging.DEBUG, logger="arkflow")
    caplog.set_level(logging.DEBUG, logger="chalicelib")
    caplog.set_level(logging.INFO)
    recorded = Recorded(lanes)

    secrets = run_session(lanes, monkeypatch)

    tokens = {name for name in secrets if name.endswith("token")}
    leaks = [(where, name) for where, text in recorded.texts(except_logins=True)
             for name, value in secrets.items() if value in text]
    leaks += [(where, name) for where, text in recorded.texts() for name, value in secrets.items()
              if value in text and name not in tokens]
    leaks += [(where, "traceback") for where, text in recorded.texts() if "Traceback" in text or 'File "' in text]
    # An unexpected error is logged with its traceback for the operators, so that one entry is no leak there.
    log_secrets = {name: value for name, value in secrets.items() if name != "an unexpected error's text"}
    log_lines = [f"{record.name}: {record.getMessage()}\n{record.exc_text or ''}" for record in caplog.records]
    leaks += [(line.splitlines()[0], name) for line in log_lines for name, value in log_secrets.items()
              if value in line]
    assert leaks == []
    assert len(recorded.responses) >= 20 and len(caplog.records) > 0  # the session did run and log
    assert any(response.status_code == 500 for _, _, response in recorded.responses)
