"""The API's OpenAPI 3.1 document (`GET /api/openapi.json`), built from what each route declared on `Http.route`
(`chalicelib.api.http.Operation`): the pydantic schemas that parse its body and query string, the schemas of its
answers (`chalicelib.api.responses`), and the errors it gives. Built once per container; the web app shows it
(web/reference.html) and the fuzz test (tests/devstack/test_api_fuzz.py) holds the local stack to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode, JsonSchemaValue

from chalicelib.api.http import Http, Operation
from chalicelib.api.responses import ErrorBody
from chalicelib.ids import PATH_PARAMETERS

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
JSON = "application/json"
# Each route's own `links` point at other routes by their operationId (the view's name).
SESSION_SCHEME, API_KEY_SCHEME = "session", "apiKey"
SECURITY_SCHEMES: dict[str, Any] = {
    SESSION_SCHEME: {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A login session's token from `POST /api/users/login`: `Authorization: Bearer <token>`. "
                       "It ends with logout, a password change, or the user being disabled or deleted.",
    },
    API_KEY_SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": "An API key (`ak_…`, from `POST /api/keys`): `Authorization: Bearer ak_…`. It reaches only "
                       "the routes that name its scope (`tasks:read`, `tasks:write`, which implies read); never "
                       "admin routes, key management, the webhook secret or WebSocket tickets.",
    },
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
DESCRIPTION = """arkflow generates images and videos with Volcengine Ark's models: submit a task, watch it move
`queued → running → succeeded | failed | cancelled | expired`, keep its results.

Every error has one shape, `{"error": {"code", "message", "details"?}}`: branch on `code`; `details` lists each bad
field of a 400 (`field` in the API's own paths: `images[1]`, `params.duration`). Any route may also answer 503
`unavailable` (with `Retry-After`) while a store does not answer: nothing was changed, send it again.

Examples with curl, and what each field means: docs/api.md in the repository."""


def _error_statuses(operation: Operation) -> dict[int, list[str]]:
    """Every error status the route can give, with what each means: those of its kind, then its own."""
    errors: dict[int, list[str]] = {}

    def add(status: int, meaning: str) -> None:
        errors.setdefault(status, []).append(meaning)

    if operation.body is not None:
        add(400, "`malformed_json` (not JSON, or nested too deep) or `validation_error` (`details` lists each field)")
        add(413, "`payload_too_large`: the body is larger than the route takes")
    if operation.query is not None:
        add(400, "`validation_error`: a query parameter is invalid or unknown")
    if operation.access != "public":
        add(401, "`unauthorized` (no token), `invalid_token` (malformed, expired, revoked, or its user disabled) or "
                 "`invalid_api_key` (an API key unknown, revoked, expired, or its user disabled or deleted)")
        add(403, {"user": "`forbidden`: the internal service token",
                  "admin": "`forbidden`: the route is for administrators",
                  "admin_or_service": "`forbidden`: the route is for administrators"}[operation.access])
        if operation.scope is not None:
            add(403, f"`insufficient_scope`: an API key without `{operation.scope}` (`details.required_scope`)")
        else:
            add(403, "`api_key_not_allowed`: an API key (this route takes a login session only)")
    # Chalice checks every route's `Content-Type` before the view runs (`Http._one_error_shape`).
    add(415, "`unsupported_media_type`: a `Content-Type` other than `application/json`")
    for name in _path_names(operation.path):
        if name in PATH_PARAMETERS:
            add(404, f"`{PATH_PARAMETERS[name].kind}_not_found`")
    for status, meaning in operation.errors.items():
        add(status, meaning)
    add(503, "`unavailable`: a store or Ark did not answer; nothing changed, try again after `Retry-After`")
    return errors


def _path_names(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


class _Schemas:
    """Every schema the document names, generated together so each model is one component (one name each)."""

    def __init__(self, operations: Iterable[Operation]) -> None:
        self._inputs: list[tuple[int, JsonSchemaMode, TypeAdapter[Any]]] = []
        self._kept: dict[tuple[int, JsonSchemaMode], Any] = {}
        self.add(ErrorBody, "serialization")
        for operation in operations:
            for schema in (operation.body, operation.query, *operation.headers.values()):
                if schema is not None:
                    self.add(schema, "validation")
            for schema in operation.responses.values():
                if schema is not None:
                    self.add(schema, "serialization")
        by_key, definitions = TypeAdapter.json_schemas(self._inputs, ref_template=REF_TEMPLATE)
        self._by_key = by_key
        self.components: dict[str, JsonSchemaValue] = definitions.get("$defs", {})

    def add(self, schema: Any, mode: JsonSchemaMode) -> None:
        if (id(schema), mode) not in self._kept:
            self._kept[(id(schema), mode)] = schema  # kept alive, so its id stays its own
            self._inputs.append((id(schema), mode, TypeAdapter(schema)))

    def of(self, schema: Any, mode: JsonSchemaMode) -> JsonSchemaValue:
        return self._by_key[(id(schema), mode)]

    def resolved(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        """A model's own schema rather than the reference to it."""
        ref = schema.get("$ref", "")
        return self.components[ref.rsplit("/", 1)[-1]] if ref else schema


def _without_null(schema: JsonSchemaValue) -> JsonSchemaValue:
    """A query or header value's schema: an optional one is left out, never sent as null."""
    branches = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
    if "anyOf" not in schema or len(branches) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf" and (key, value) != ("default", None)}
    return {**branches[0], **rest}


def _parameter(location: str, name: str, schema: JsonSchemaValue, required: bool) -> dict[str, Any]:
    parameter = {"name": name, "in": location, "required": required, "schema": _without_null(schema)}
    if "description" in schema:
        parameter["description"] = schema["description"]
    return parameter


def _parameters(operation: Operation, schemas: _Schemas) -> list[dict[str, Any]]:
    parameters = []
    for name in _path_names(operation.path):
        known = PATH_PARAMETERS.get(name)
        schema = {"type": "string", **({"pattern": known.pattern.pattern} if known else {})}
        if known and known.canonical is str.lower:
            schema["description"] = f"the {known.kind} (case-insensitive)"
        parameters.append(_parameter("path", name, schema, required=True))
    if operation.query is not None:
        model = schemas.resolved(schemas.of(operation.query, "validation"))
        required = set(model.get("required", []))
        for name, schema in model.get("properties", {}).items():
            parameters.append(_parameter("query", name, schema, required=name in required))
    for name, header in operation.headers.items():
        parameters.append(_parameter("header", name, schemas.of(header, "validation"), required=False))
    return parameters


def _summary(operation: Operation) -> tuple[str, str]:
    """The view's docstring: its first line the summary, the rest the description."""
    first, _, rest = operation.doc.strip().partition("\n\n")
    summary = " ".join(first.split()) or operation.name.replace("_", " ").capitalize()
    return summary, " ".join(rest.split())


def _tag(path: str) -> str:
    """Routes are grouped by what they address: `/api/admin/models/{id}` under "admin models"."""
    words = [part for part in path.split("/")[2:] if not part.startswith("{")]
    return " ".join(words[:2]) if words[0] == "admin" else words[0]


def _operation(operation: Operation, schemas: _Schemas, links: Mapping[str, Any]) -> dict[str, Any]:
    summary, description = _summary(operation)
    entry: dict[str, Any] = {
        "operationId": operation.name,
        "summary": summary,
        "tags": [_tag(operation.path)],
        "x-access": operation.access,
    }
    if description:
        entry["description"] = description
    if operation.access == "public":
        entry["security"] = []
    else:
        entry["security"] = [{SESSION_SCHEME: []}] + (
            [{API_KEY_SCHEME: [operation.scope]}] if operation.scope else [])
    if parameters := _parameters(operation, schemas):
        entry["parameters"] = parameters
    if operation.body is not None:
        entry["requestBody"] = {"required": operation.body_required,
                                "content": {JSON: {"schema": schemas.of(operation.body, "validation")}}}
    responses: dict[str, Any] = {}
    for status, schema in sorted(operation.responses.items()):
        answer: dict[str, Any] = {"description": "the answer" if status < 300 else ""}
        if schema is not None:
            answer["content"] = {JSON: {"schema": schemas.of(schema, "serialization")}}
        if status in links:
            answer["links"] = links[status]
        responses[str(status)] = answer
    error_body = {JSON: {"schema": schemas.of(ErrorBody, "serialization")}}
    for status, meanings in sorted(_error_statuses(operation).items()):
        answer = {"description": "; ".join(meanings), "content": error_body}
        if status in (429, 503):
            answer["headers"] = RETRY_AFTER
        responses[str(status)] = answer
    entry["responses"] = responses
    return entry


def _links(operation: Operation, names: set[str]) -> dict[int, dict[str, Any]]:
    links: dict[int, dict[str, Any]] = {}
    for status, targets in operation.links.items():
        for target, parameters in targets.items():
            if target not in names:
                raise ValueError(f"{operation.name} links to {target!r}, which is no route's operationId")
            links.setdefault(status, {})[target] = {"operationId": target, "parameters": dict(parameters)}
    return links


def build_document(operations: Iterable[Operation], *, title: str = "arkflow", version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`."""
    operations = list(operations)
    schemas = _Schemas(operations)
    names = {operation.name for operation in operations}
    if len(names) != len(operations):
        raise ValueError("two routes share a view name, which is each one's operationId")
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, schemas, _links(operation, names))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": _referenced(schemas.components, paths), "securitySchemes": SECURITY_SCHEMES},
    }


def _referenced(components: dict[str, JsonSchemaValue], paths: dict[str, Any]) -> dict[str, JsonSchemaValue]:
    """The components `paths` refer to, directly or through others (pydantic also defines types a validator
    replaces in the schema, such as the `ImageRef` an image reference is read into)."""
    prefix = REF_TEMPLATE.format(model="")
    names: set[str] = set()
    pending = [paths]
    while pending:
        found = re.findall(re.escape(prefix) + r'([^"]+)"', json.dumps(pending.pop()))
        for name in set(found) - names:
            names.add(name)
            pending.append(components[name])
    return {name: schema for name, schema in components.items() if name in names}


@lru_cache(maxsize=4)
def _cached(http: Http, server: str) -> str:
    return json.dumps({**_document_of(http), "servers": [{"url": server}]}, separators=(",", ":"))


@lru_cache(maxsize=1)
def _document_of(http: Http) -> dict[str, Any]:
    return build_document(http.operations)


def document_json(http: Http, base_path: str = "") -> str:
    """The document of `http`'s routes as JSON text, built once per container; its server is `base_path` (the
    stage's prefix behind API Gateway, "" locally), relative to wherever the document was fetched from."""
    return _cached(http, base_path or "/")
