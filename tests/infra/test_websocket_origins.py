"""Who may open the WebSocket as deployed: the code, the stack parameter and the README say the same thing, and the
default (`WsAllowedOrigins` left empty) lets the web app in and nobody else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib import wiring
from chalicelib.live import LiveUpdates
from chalicelib.settings import Settings
from infra.template import PARAMETERS
from tests.factories import DEMO, principal_of

WEB_APP = "https://app.example.com"
README = Path(__file__).resolve().parents[2] / "README.md"


def _connect(origin: str, ws_allowed_origins: str, monkeypatch: pytest.MonkeyPatch) -> int:
    # What the stack sets for every function: both parameters, the second one as given (empty by default).
    monkeypatch.setenv("CORS_ORIGINS", WEB_APP)
    monkeypatch.setenv("WS_ALLOWED_ORIGINS", ws_allowed_origins)
    live = LiveUpdates(wiring.current().bodies, settings=Settings())
    event: dict[str, Any] = {
        "headers": {"Origin": origin},
        "queryStringParameters": {"ticket": live.tickets.issue(principal_of(DEMO)).ticket},
        "requestContext": {"connectionId": f"conn-{origin}-{ws_allowed_origins}"},
    }
    return live.connect(event)["statusCode"]


def test_the_default_lets_the_web_app_in_and_refuses_other_origins(seeded, monkeypatch) -> None:
    assert PARAMETERS["WsAllowedOrigins"]["Default"] == ""
    assert _connect(WEB_APP, "", monkeypatch) == 200
    assert _connect("https://evil.example", "", monkeypatch) == 403


def test_a_list_replaces_the_default_and_a_star_allows_any(seeded, monkeypatch) -> None:
    assert _connect("https://other.example", "https://other.example", monkeypatch) == 200
    assert _connect(WEB_APP, "https://other.example", monkeypatch) == 403
    assert _connect("https://anyone.example", "*", monkeypatch) == 200


def test_template_and_readme_describe_that_default() -> None:
    description = PARAMETERS["WsAllowedOrigins"]["Description"]
    assert "empty: the origins in CorsOrigins" in description
    readme = " ".join(README.read_text().split())
    parameter = readme[readme.index("`WsAllowedOrigins` (") :][:200]
    assert "origins allowed to open the WebSocket; empty: the origins in `CorsOrigins`; `*` allows any" in parameter
