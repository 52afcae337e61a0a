"""The OpenAPI document (`GET /api/openapi.json`): every route is in it, it is valid OpenAPI 3.1, and the answers the
routes give match the schemas it names (in-process; tests/api/test_api_fuzz.py fuzzes the real stack against it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from chalicelib.api.http import Operation
from chalicelib.api.openapi import build_document, document_json
from chalicelib.schemas import LoginRequest, UserCreate, UserUpdate, parse
from tests.api_client import Api
from tests.conftest import reconfigure
from tests.factories import ADMIN, DEMO, IMAGE_TASK
from tests.keys.conftest import new_key


def document_of(api: Api) -> dict[str, Any]:
    response = api.request("GET", "/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    return response.data


def test_every_route_of_the_app_is_in_the_document(api: Api) -> None:
    """Safeguard: listed from Chalice's own route table, so a route added without `http.route` (and so without
    its schemas) fails here; CORS preflights are left out, WebSocket handlers are no routes."""
    from app import app

    routes = {(path, method) for path, methods in app.routes.items() for method in methods if method != "OPTIONS"}
    documented = {(path, method.upper()) for path, methods in document_of(api)["paths"].items() for method in methods}
    assert documented == routes
    assert len(routes) >= 26


def test_the_document_is_valid_openapi_3_1_and_public(api: Api) -> None:
    document = document_of(api)  # no token sent
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert set(document["components"]["securitySchemes"]) == {"session", "apiKey"}
    assert document["servers"] == [{"url": "/"}]


def test_behind_api_gateway_the_server_is_the_stage() -> None:
    """API Gateway's stage (or a custom domain's base path) precedes the routes: the document names it as its
    server, so clients and the reference call `/api/api/health` on a stage named `api`."""
    from app import app

    route = "/api/openapi.json"
    event = {"resource": route, "path": route, "httpMethod": "GET", "headers": {}, "multiValueHeaders": {},
             "queryStringParameters": None, "multiValueQueryStringParameters": None, "pathParameters": None,
             "stageVariables": None, "body": None, "isBase64Encoded": False,
             "requestContext": {"resourcePath": route, "path": f"/api{route}", "httpMethod": "GET", "stage": "api",
                                "identity": {"sourceIp": "203.0.113.9"}}}
    answer = app(event, None)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["servers"] == [{"url": "/api"}]


def test_a_link_to_no_route_is_refused() -> None:
    from chalicelib.api.responses import Health

    operation = Operation("/api/health", "GET", "public", "health", "", {200: Health},
                          links={200: {"no_such_view": {"id": "$response.body#/id"}}})
    with pytest.raises(ValueError, match="no_such_view"):
        build_document([operation])


ACCOUNT_BODIES = {("/api/users/login", "POST"): LoginRequest, ("/api/admin/users", "POST"): UserCreate,
                  ("/api/admin/users/{username}", "PUT"): UserUpdate}


@pytest.mark.parametrize(("route", "schema"), ACCOUNT_BODIES.items(), ids=lambda value: str(value))
def test_bodies_the_document_allows_are_bodies_the_api_takes(route: tuple[str, str], schema: type) -> None:
    """What the fuzz's figures showed: every login it sent got 400, the document's usernames lacking their pattern
    (a validator before it hid it from pydantic's schema), and its partial updates allowing null and `{}`, which
    the API refuses. Bodies made from the document's schema (schemathesis's positive cases) now all parse."""
    import schemathesis

    from app import http

    operation = schemathesis.openapi.from_dict(json.loads(document_json(http)))[route[0]][route[1]]

    @settings(max_examples=30, suppress_health_check=list(HealthCheck), database=None, deadline=None)
    @given(case=operation.as_strategy())
    def body_parses(case: Any) -> None:
        parse(schema, _integers_written_as_integers(case.body))

    body_parses()


def _integers_written_as_integers(body: Any) -> Any:
    """JSON Schema's `integer` takes 1.0; the API, strict JSON, takes an integer only without a fraction
    (docs/api.md, its opening): the generator's 1.0 is written 1 here, as every client writes it."""
    if isinstance(body, dict):
        return {name: _integers_written_as_integers(value) for name, value in body.items()}
    if isinstance(body, float) and body.is_integer():
        return int(body)
    return body


class Conformance:
    """Checks answers against the schemas the document gives for their route and status."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, response: Any, method: str, route: str) -> Any:
        answers = self.document["paths"][route][method.lower()]["responses"]
        assert str(response.status_code) in answers, (method, route, response.status_code, response.data)
        schema = answers[str(response.status_code)]["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": self.document["components"]},
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(response.data)]
        assert errors == [], (method, route, response.status_code)
        self.checked.add((method, route, response.status_code))
        return response.data


def test_answers_match_the_documented_schemas(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task's life and the admin views, each answer against its schema: a field added to a body (or a null where
    the schema says never) without the document saying so fails here, as well as in the fuzz."""
    monkeypatch.setenv("ARK_API_KEY", "never-called")  # cancelling a queued image asks Ark nothing
    reconfigure()
    conform = Conformance(document_of(api))

    def call(method: str, route: str, path: str | None = None, body: Any = None, as_user: tuple[str, str] | None = DEMO,
             **kwargs: Any) -> Any:
        return conform.check(api.request(method, path or route, body, as_user=as_user, **kwargs), method, route)

    conform.check(api.request("GET", "/api/health"), "GET", "/api/health")
    conform.check(api.request("POST", "/api/users/login", {"username": DEMO[0], "password": "wrong"}), "POST",
                  "/api/users/login")
    call("GET", "/api/users/me")
    call("GET", "/api/models")
    created = call("POST", "/api/tasks", body=IMAGE_TASK, headers={"Idempotency-Key": "conformance-1"})
    task = f"/api/tasks/{created['id']}"
    call("GET", "/api/tasks/{task_id}", task)
    call("GET", "/api/tasks", "/api/tasks?limit=5")
    call("GET", "/api/tasks", "/api/tasks?limit=0")  # 400
    call("GET", "/api/admin/tasks", "/api/admin/tasks?user=demo", as_user=ADMIN)
    call("DELETE", "/api/tasks/{task_id}", task)  # 409: not finished
    call("POST", "/api/tasks/{task_id}/cancel", f"{task}/cancel")
    call("POST", "/api/tasks/{task_id}/cancel", f"{task}/cancel")  # 409: cancelled already
    call("DELETE", "/api/tasks/{task_id}", task)
    call("GET", "/api/tasks/{task_id}", task)  # 404
    call("POST", "/api/uploads", body={"content_type": "image/png", "size": 1024})
    call("POST", "/api/ws/ticket")
    call("GET", "/api/admin/models", as_user=ADMIN)
    call("GET", "/api/admin/ark-models", as_user=ADMIN)
    call("GET", "/api/admin/models/{model_id}", "/api/admin/models/seedream-4.5", as_user=ADMIN)
    call("GET", "/api/admin/users", as_user=ADMIN)
    call("GET", "/api/admin/users", as_user=DEMO)  # 403
    call("POST", "/api/admin/users", body={"username": "newcomer", "password": "long-enough"}, as_user=ADMIN)
    call("PUT", "/api/admin/users/{username}", "/api/admin/users/newcomer", {"disabled": True}, as_user=ADMIN)
    call("DELETE", "/api/admin/users/{username}", "/api/admin/users/newcomer", as_user=ADMIN)
    call("POST", "/api/users/logout")
    call("GET", "/api/users/me", as_user=None, token="not-a-token")  # 401
    statuses = {status for _, _, status in conform.checked}
    assert {200, 201, 400, 401, 403, 404, 409} <= statuses
    assert len(json.dumps(conform.document)) < 1_000_000  # far under Lambda's 6 MB answers


def test_the_deliveries_of_a_task_not_the_callers_answer_a_documented_404(api: Api) -> None:
    """`task_id` is a query parameter there, not a path one, so the document's rule for path ids does not add the
    404 that `get_own` answers for a task of someone else's, or of no one's."""
    created = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=ADMIN)
    assert created.status_code == 201, created.body

    response = api.request("GET", f"/api/webhooks/deliveries?task_id={created.data['id']}", as_user=DEMO)

    assert response.status_code == 404 and response.data["error"]["code"] == "task_not_found"
    operation = document_of(api)["paths"]["/api/webhooks/deliveries"]["get"]
    assert "404" in operation["responses"]


def test_refusals_before_any_view_and_of_api_keys_are_documented_errors(api: Api) -> None:
    """Chalice refuses a request whose `Content-Type` is not JSON (as `curl -d` sends a body) before any view runs,
    with a body of its own; that answer, and each refusal of an API key, is still the one error shape, at a status
    the document gives the route, whose description names the code."""
    conform = Conformance(document_of(api))
    read_only = new_key(api, DEMO, scopes=["tasks:read"])["key"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases = [
        ("POST", "/api/keys", dict(as_user=DEMO, headers=form, raw='{"name": "ci"}'), 415, "unsupported_media_type"),
        ("GET", "/api/tasks", dict(as_user=DEMO, headers={"Content-Type": "text/plain"}), 415,
         "unsupported_media_type"),
        ("GET", "/api/keys", dict(token=read_only), 403, "api_key_not_allowed"),
        ("GET", "/api/admin/users", dict(token=read_only), 403, "api_key_not_allowed"),
        ("POST", "/api/tasks", dict(token=read_only, body=IMAGE_TASK), 403, "insufficient_scope"),
        ("GET", "/api/tasks", dict(token="ak_" + "a" * 43), 401, "invalid_api_key"),
    ]
    for method, route, request, status, code in cases:
        response = api.request(method, route, request.pop("body", None), **request)
        assert (response.status_code, response.data["error"]["code"]) == (status, code), response.body
        conform.check(response, method, route)
        assert f"`{code}`" in conform.document["paths"][route][method.lower()]["responses"][str(status)]["description"]


@pytest.mark.parametrize("content_type",
                         ["", "application/merge-patch+json", "Application/Vnd.Api+JSON; charset=utf-8"])
def test_a_json_request_is_never_refused_for_its_content_type_label(api: Api, content_type: str) -> None:
    """A blank `Content-Type` (a client that clears it) is taken as none, and a JSON structured-syntax type as JSON:
    the body is read, not refused with a 415; a type that is not JSON still is."""
    headers = {"Content-Type": content_type}
    created = api.request("POST", "/api/keys", {"name": "ci", "scopes": ["tasks:read"]}, as_user=DEMO, headers=headers)
    assert created.status_code == 201, created.body
    assert api.request("GET", "/api/tasks", as_user=DEMO, headers=headers).status_code == 200
    form = api.request("POST", "/api/keys", as_user=DEMO, headers={"Content-Type": "multipart/form-data; boundary=x"},
                       raw='{"name": "ci"}')
    assert form.status_code == 415
