"""The glue between Chalice routes and the services: auth, JSON bodies, one error format, CORS, and the record of
what each route takes and answers (`Operation`), from which `chalicelib.api.openapi` builds the API's document."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from chalice import Chalice, Response
from chalice.app import CaseInsensitiveMapping, Request
from pydantic import BaseModel
from pynamodb.exceptions import PynamoDBException, TransactWriteError

from chalicelib.accounts.auth import Authenticator, Principal, require_admin
from chalicelib.errors import ApiError, BadRequest, Forbidden, PayloadTooLarge, Unavailable, error_object
from chalicelib.ids import path_parameter
from chalicelib.schemas import MAX_JSON_DEPTH, Scope, json_depth
from chalicelib.secret_store import SecretUnavailable
from chalicelib.settings import get_settings
from chalicelib.store.writes import transaction_conflicted

logger = logging.getLogger(__name__)

Access = Literal["public", "user", "admin", "admin_or_service"]
# A request body's or a response body's schema: a pydantic model, or a type pydantic can describe (a union of
# models); None for an answer without a body.
BodySchema = Any
ALLOWED_HEADERS = "Authorization,Content-Type,Idempotency-Key"
ALLOWED_METHODS = "GET,POST,PUT,DELETE,OPTIONS"
# AWS's answers that say "not now" (overloaded, failing, a write under way on the item): the same request may pass.
_TRANSIENT_AWS_CODES = frozenset({
    "InternalServerError", "ServiceUnavailable", "ThrottlingException", "ProvisionedThroughputExceededException",
    "RequestLimitExceeded", "TransactionConflictException", "TransactionInProgressException",
})
STORE_RETRY_AFTER_S = 1


def store_unavailable(error: BaseException) -> bool:
    """Whether `error` is AWS (DynamoDB above all) failing for now, not a request it judged: a 5xx or throttling
    answer, a transaction cancelled only by conflicts, or no answer at all (the endpoint out of reach, a timeout).
    A failed condition, a missing item or a refused request are not: escaping a route, those are bugs. The stage's
    secret out of reach (no copy held, Secrets Manager failing or the secret missing) is the same "not now"."""
    if isinstance(error, SecretUnavailable):
        return True
    if isinstance(error, TransactWriteError) and transaction_conflicted(error):
        return True
    if isinstance(error, PynamoDBException):
        return error.cause is not None and store_unavailable(error.cause)
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.response.get("Error", {}).get("Code") in _TRANSIENT_AWS_CODES or status >= 500
    return isinstance(error, BotocoreConnectionError | HTTPClientError)


@dataclass
class RequestContext:
    request: Request
    principal: Principal | None
    _body: Any = field(default=None, init=False)
    _body_read: bool = field(default=False, init=False)

    @property
    def user(self) -> Principal:
        assert self.principal is not None, "route declared public but reads the user"
        return self.principal

    def json(self, max_bytes: int | None = None) -> Any:
        """The decoded JSON body; before decoding, 413 when larger than `max_bytes` (default `MAX_BODY_BYTES`)
        and 400 when nested deeper than any request needs; 400 when malformed."""
        if not self._body_read:
            raw = self.request.raw_body or b""
            limit = min(max_bytes or get_settings().max_body_bytes, get_settings().max_body_bytes)
            if len(raw) > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.", details={"limit_bytes": limit})
            if not raw.strip():
                raise BadRequest("A JSON body is required.", code="malformed_json")
            if json_depth(raw) > MAX_JSON_DEPTH:
                # json.loads recurses per level and raises RecursionError (not ValueError) near 1,000 levels.
                raise BadRequest(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.",
                                 code="malformed_json", details={"max_depth": MAX_JSON_DEPTH})
            try:
                self._body = json.loads(raw)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise BadRequest("The request body is not valid JSON.", code="malformed_json") from exc
            self._body_read = True
        return self._body

    def has_body(self) -> bool:
        """Whether the request carries a body (for routes whose body is optional)."""
        return bool((self.request.raw_body or b"").strip())

    def source_address(self) -> str | None:
        """The client's address as API Gateway saw the connection (never a client-set header)."""
        identity = (self.request.context or {}).get("identity") or {}
        return identity.get("sourceIp")

    def base_path(self) -> str:
        """What precedes the app's routes in the URL the client asked for: API Gateway's stage (`/api`) or a custom
        domain's base path; "" locally. Known only on routes without path parameters."""
        context = self.request.context or {}
        full, route = context.get("path") or "", context.get("resourcePath") or ""
        if not route or "{" in route or not full.endswith(route):
            return ""
        return full[: len(full) - len(route)]

    def query(self) -> dict[str, str]:
        return dict(self.request.query_params or {})

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)


def _key_may_use(principal: Principal, access: Access, scope: Scope | None) -> None:
    """An API key reaches only user routes that name a scope, and only with that scope (secure by default: a
    route that names none, and every admin, key management or session route, refuses keys)."""
    if access != "user" or scope is None:
        raise Forbidden("API keys cannot use this route; it needs a login session.", code="api_key_not_allowed")
    if not principal.may(scope):
        raise Forbidden(f"This API key does not have the {scope} scope.", code="insufficient_scope",
                        details={"required_scope": scope})


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


@dataclass(frozen=True)
class Operation:
    """One route as `Http.route` declared it: the source of its entry in the OpenAPI document.

    `responses` maps each success status to its body's schema (None: no body); the errors every route of its kind
    can give are added by the document (401/403 by `access`, 400/413 for a body, 400 for a query, 404 for an id in
    the path, 503 for all), and `errors` adds the route's own, each status with the codes it answers. `body` is
    the request body's schema (required unless `body_required` is false), `query` the model its query string is
    parsed with, `headers` the request headers it reads (name -> schema). `links` name, per success status, the
routes its answer leads to (their view names) and how their parameters come from it (OpenAPI runtime expressions:
`{201: {"get_task": {"task_id": "$response.body#/id"}}}`). `scope` is the API-key scope the route
    takes (None: sessions only). `doc` (the view's docstring) becomes the summary and description.
    """

    path: str
    method: str
    access: Access
    name: str
    doc: str
    responses: Mapping[int, BodySchema]
    body: BodySchema = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    headers: Mapping[str, BodySchema] = field(default_factory=dict)
    errors: Mapping[int, str] = field(default_factory=dict)
    links: Mapping[int, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    scope: str | None = None


# What Chalice itself answers, before any view runs, in its own `{"Code", "Message"}` body: a `Content-Type` other
# than JSON (415, on AWS too), a method the path lacks (405, `chalice local` only: API Gateway answers that itself).
_CHALICE_REFUSALS = {
    "UnsupportedMediaType": ("unsupported_media_type", "Send the request with `Content-Type: application/json`."),
    "MethodNotAllowedError": ("method_not_allowed", "This route does not take that method."),
}


def _read_json_types_as_json(request: Request | None) -> None:
    """Chalice takes a request without `Content-Type` as JSON but refuses (415) an empty one, and every JSON type
    but `application/json` itself: a blank header is taken as none, and a JSON structured-syntax type
    (`application/merge-patch+json`, RFC 6839) as `application/json`, so no JSON request is refused for its label."""
    if request is None or "content-type" not in request.headers:
        return
    media_type = request.headers["content-type"].split(";", 1)[0].strip().lower()
    if media_type and not (media_type.startswith("application/") and media_type.endswith("+json")):
        return
    headers = {name: value for name, value in request.headers.items() if name != "content-type"}
    if media_type:
        headers["content-type"] = "application/json"
    request.headers = CaseInsensitiveMapping(headers)


class Http:
    """Wraps view functions: authenticates, maps `ApiError` to the one error body, adds CORS headers."""

    def __init__(self, app: Chalice, authenticator_factory: Callable[[], Authenticator]) -> None:
        self.app = app
        self._authenticator_factory = authenticator_factory
        # Every route's API key scope (None: keys refused), as `route` registered it.
        self.scopes: dict[tuple[str, str], Scope | None] = {}
        self.operations: list[Operation] = []
        app.register_middleware(self._one_error_shape, "http")

    def _one_error_shape(self, request: Request, get_response: Callable[[Request], Response]) -> Response:
        """Chalice's own refusals in the API's error shape, with CORS headers (a browser reads none without); a JSON
        request's `Content-Type` read as JSON first (`_read_json_types_as_json`)."""
        _read_json_types_as_json(request)
        response = get_response(request)
        body = response.body
        if isinstance(body, dict) and set(body) == {"Code", "Message"}:
            code, message = _CHALICE_REFUSALS.get(str(body["Code"]), ("bad_request", "The request was refused."))
            response.body = {"error": error_object(code, message)}
            response.headers = {**response.headers, "Content-Type": "application/json",
                                **self._cors_headers(request)}
        return response

    def _cors_headers(self, request: Request | None) -> dict[str, str]:
        origin = request.headers.get("origin") if request is not None else None
        allowed = get_settings().cors_origins
        if not origin or not allowed or (origin not in allowed and "*" not in allowed):
            return {}
        return {
            "Access-Control-Allow-Origin": "*" if "*" in allowed else origin,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Max-Age": "600",
            # Lets the web app tell how long to wait after a 429.
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }

    def _authenticate(self, request: Request, access: Access, scope: Scope | None) -> Principal | None:
        if access == "public":
            return None
        principal = self._authenticator_factory().authenticate(request.headers.get("authorization"))
        if principal.key_id is not None:
            _key_may_use(principal, access, scope)
        if access == "admin":
            require_admin(principal)
        elif access == "admin_or_service":
            if principal.role not in ("admin", "service"):
                raise Forbidden("This route is for administrators.")
        elif principal.role == "service":
            raise Forbidden("The service token is only for internal routes.")
        return principal

    @staticmethod
    def _unhandled(error: Exception, view_name: str, request: Request) -> Response:
        """AWS failing for now answers 503 with when to retry; anything else is a bug: 500. Logged once, and
        AWS's own text stays in the log (it names tables and internals the client has no use for)."""
        if not store_unavailable(error):
            logger.exception("unhandled error in %s", view_name)
            return json_response(500, {"error": error_object("internal_error", "Something went wrong on our side.")})
        logger.warning("AWS unavailable in %s (request %s): %r", view_name, (request.context or {}).get("requestId"),
                       error)
        unavailable = Unavailable("The service is briefly unavailable; try again shortly.",
                                  headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
        return json_response(unavailable.status, unavailable.body(), unavailable.headers)

    def endpoint(self, access: Access = "user",
                 scope: Scope | None = None) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
        def decorate(view: Callable[..., Any]) -> Callable[..., Response]:
            @functools.wraps(view)
            def wrapper(**path_params: str) -> Response:
                request = self.app.current_request
                try:
                    context = RequestContext(request, self._authenticate(request, access, scope))
                    canonical = {name: path_parameter(name, value) for name, value in path_params.items()}
                    result = view(context, **canonical)
                    response = result if isinstance(result, Response) else json_response(200, result)
                except ApiError as error:
                    response = json_response(error.status, error.body(), error.headers)
                except Exception as error:
                    response = self._unhandled(error, view.__name__, request)
                response.headers.update(self._cors_headers(request))
                return response

            return wrapper

        return decorate

    def route(
        self,
        path: str,
        method: str,
        access: Access = "user",
        *,
        responses: Mapping[int, BodySchema],
        body: BodySchema = None,
        body_required: bool = True,
        query: type[BaseModel] | None = None,
        headers: Mapping[str, BodySchema] | None = None,
        errors: Mapping[int, str] | None = None,
        links: Mapping[int, Mapping[str, Mapping[str, str]]] | None = None,
        scope: Scope | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
        """Register `view` as the app's route for `method` on `path`, wrapped by `endpoint(access, scope)`, and
        record what it takes and answers for the API's document (`Operation` says what each argument means).

        `scope` is what an API key needs to call the route (a user route only); without one, keys are refused."""

        assert scope is None or access == "user", "only user routes take API keys"

        def decorate(view: Callable[..., Any]) -> Callable[..., Response]:
            self.scopes[(path, method)] = scope
            self.operations.append(Operation(
                path=path, method=method, access=access, name=view.__name__, doc=view.__doc__ or "",
                responses=dict(responses), body=body, body_required=body_required, query=query,
                headers=dict(headers or {}), errors=dict(errors or {}), links=dict(links or {}), scope=scope,
            ))
            return self.app.route(path, methods=[method])(self.endpoint(access, scope)(view))

        return decorate

    def register_preflight(self) -> None:
        """Answer CORS preflight on every route, for any origin in CORS_ORIGINS (Chalice's CORS takes one)."""
        for path, methods in list(self.app.routes.items()):
            if "OPTIONS" in methods:
                continue

            def preflight(**_: str) -> Response:
                return Response(body="", status_code=204, headers=self._cors_headers(self.app.current_request))

            name = "preflight_" + "".join(ch if ch.isalnum() else "_" for ch in path)
            self.app.route(path, methods=["OPTIONS"], name=name)(preflight)
