"""An in-memory stand-in for arkflow's REST API and WebSocket, for checking the web app's screens.

It follows the API contract (routes, bodies, error format, CORS, task updates over a WebSocket reached with a
single-use ticket) closely enough for the browser, and lets a test drive everything the real stack would do
on its own: move tasks through their states, fail the next request, expire every session, drop sockets.
The web app itself is served by the local stack's own static server (`devstack.webapp`), on another origin.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from arksim.media import Look, render_picture, render_still, render_video
from chalicelib.ark import capabilities
from chalicelib.clock import iso
from devstack.webapp import make_web_server

HOST = "127.0.0.1"
ADMIN = ("admin", "admin-pass")
DEMO = ("demo", "demo-pass")
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}
CLOSED_CIRCUIT = {"state": "closed", "since": None, "reason": None}
SAMPLE_S = 300  # the metrics' series: one sample per 5 minutes over the window
WINDOWS_S = {"1h": 3600, "24h": 86400}
AUDIT_PAGE = 50  # the audit route's default page size
IMAGE_PARAMS = ("size", "max_images", "watermark", "output_format", "tools")
FAKE_LOOK = Look("a result of the fake API", "fake")


def now_iso() -> str:
    return iso(time.time())


class ApiFailure(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def validation_failure(field_path: str, message: str) -> ApiFailure:
    return ApiFailure(400, "validation_error", "1 invalid field(s)",
                      [{"field": field_path, "message": message, "type": "value_error"}])


@dataclass
class Injected:
    method: str
    path_pattern: str
    status: int
    body: dict[str, Any]


@dataclass
class Held:
    """Requests answered only once `release` is set; `arrived` counts those waiting or done."""

    method: str
    path_pattern: str
    release: threading.Event = field(default_factory=threading.Event)
    arrived: int = 0


@dataclass
class FakeState:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    tickets: dict[str, str] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    user_usage: dict[tuple[str, str], int] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], str] = field(default_factory=dict)
    injected: list[Injected] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # model id -> how many of its queued tasks a change of upstream cannot move (409 without `force`)
    incompatible_queued: dict[str, int] = field(default_factory=dict)
    # The operations console's sources: per model, the metrics' fields a test sets (the rest follow the tasks),
    # circuits, usage rows, dead letters by queue, and the audit trail (oldest first).
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    circuits: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage_rows: list[dict[str, Any]] = field(default_factory=list)
    usage_page_max: int = 1000  # as the real route's (a test lowers it to make the dashboard follow the cursor)
    dlq: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)
    # tasks whose video Ark already generates: an operator's end of it is refused (409 generating_at_ark)
    generating_at_ark: set[str] = field(default_factory=set)
    # the next this many pages of a listing come back empty with a cursor, as a filtered DynamoDB query's may
    empty_pages: int = 0


def default_models() -> dict[str, dict[str, Any]]:
    """The models the fake serves, each the capability table's `family` (docs/api.md, "Capabilities")."""
    common = {"enabled": True, "user_daily_quota": None, "max_running_per_user": None, "concurrency": 2,
              "daily_quota": 100, "defaults": {}}
    models = [
        {"model_id": "seedream-4-5", "type": "image", "family": "seedream-4.5", "display_name": "Seedream 4.5",
         "upstream_model": "doubao-seedream-4-5-251128", "concurrency": 4, "daily_quota": 500,
         "defaults": {"size": "2K"}},
        {"model_id": "seedance-1-0-pro", "type": "video", "family": "seedance-1.0-pro",
         "display_name": "Seedance 1.0 pro", "upstream_model": "doubao-seedance-1-0-pro-250528",
         "defaults": {"resolution": "720p"}},
        {"model_id": "seedream-5-0-lite", "type": "image", "family": "seedream-5.0-lite",
         "display_name": "Seedream 5.0 lite", "upstream_model": "doubao-seedream-5-0-260128"},
        {"model_id": "seedance-1-5-pro", "type": "video", "family": "seedance-1.5-pro",
         "display_name": "Seedance 1.5 pro", "upstream_model": "doubao-seedance-1-5-pro-251215"},
        {"model_id": "seedance-2-0", "type": "video", "family": "seedance-2.0", "display_name": "Seedance 2.0",
         "upstream_model": "doubao-seedance-2-0-260128"},
    ]
    return {model["model_id"]: {**common, **model} for model in models}


def lifecycle_of(model: dict[str, Any]) -> dict[str, Any]:
    """`status`, `replacement` and `warnings` as the API gives them; a test sets `status` on a model to move it."""
    status = model.get("status", "active")
    replacement = model.get("replacement")
    warnings = [] if status == "active" else [{
        "code": f"model_{status}", "replacement": replacement,
        "message": f"{model['display_name']} is {status} by its provider; use {replacement} instead."}]
    return {"status": status, "replacement": replacement, "warnings": warnings}


class FakeArkflow:
    """The fake's state and the controls tests use; the HTTP and WebSocket servers call into it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.state = FakeState()
        self.api_url = ""
        self.ws_url = ""
        self.sockets: dict[ServerConnection, str] = {}
        self.sockets_refused = False
        # Set: result links are presigned like S3's (X-Amz-Date, X-Amz-Expires), each read signing anew.
        self.link_ttl_s: int | None = None
        # The time links are signed and checked at (epoch seconds); a test moves it with the page's own clock.
        self.link_clock: Callable[[], float] = time.time
        self._ids = itertools.count(1)
        self._signatures = itertools.count(1)
        self.reset()

    # --- controls for tests -----------------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.state = FakeState(models=default_models())
            created = now_iso()
            for (username, password), role in ((ADMIN, "admin"), (DEMO, "user")):
                self.state.users[username] = {"username": username, "role": role, "disabled": False,
                                              "created_at": created}
                self.state.passwords[username] = password
            self.sockets_refused = False
            self.link_ttl_s = None
            self.link_clock = time.time
        self.drop_sockets()

    def fail_next(self, method: str, path_pattern: str, status: int, code: str, message: str,
                  details: Any = None) -> None:
        """The next request matching `method` and the regex `path_pattern` gets this error instead."""
        body = ApiFailure(status, code, message, details).body()
        with self.lock:
            self.state.injected.append(Injected(method, path_pattern, status, body))

    def hold_next(self, method: str, path_pattern: str) -> Held:
        """The next request matching is handled, then answered only once the returned `release` is set."""
        held = Held(method, path_pattern)
        with self.lock:
            self.state.held.append(held)
        return held

    def signed(self, url: str | None) -> str | None:
        """A result link as the API hands it out: presigned now, valid for `link_ttl_s`."""
        if not url or self.link_ttl_s is None:
            return url
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.link_clock()))
        return f"{url}?X-Amz-Date={stamp}&X-Amz-Expires={self.link_ttl_s}&X-Amz-Signature={next(self._signatures)}"

    def with_signed_links(self, body: dict[str, Any]) -> dict[str, Any]:
        signed = dict(body)
        if "result_urls" in body:
            signed["result_urls"] = [self.signed(url) for url in body["result_urls"] or []]
        for key in ("video_url", "last_frame_url"):
            if key in body:
                signed[key] = self.signed(body[key])
        return signed

    def expire_sessions(self) -> None:
        with self.lock:
            self.state.tokens.clear()

    def drop_sockets(self, refuse_new: bool = False) -> None:
        """Close every WebSocket; with refuse_new, handshakes fail until allow_sockets()."""
        with self.lock:
            self.sockets_refused = refuse_new
            connections = list(self.sockets)
        for connection in connections:
            connection.close()

    def allow_sockets(self) -> None:
        with self.lock:
            self.sockets_refused = False

    def connected_sockets(self) -> int:
        with self.lock:
            return len(self.sockets)

    def add_task(self, owner: str, **fields: Any) -> dict[str, Any]:
        """A task created behind the browser's back (another tab, an earlier session)."""
        with self.lock:
            task = self._new_task(owner, {"type": "image", "model_id": "seedream-4-5", "prompt": "seeded", **fields})
            task.update(fields)
            task["cancellable"] = task["status"] == "queued"
            return dict(task)

    def set_status(self, task_id: str, status: str, *, broadcast: bool = True, **fields: Any) -> dict[str, Any]:
        """Move a task on as the workers would, and tell its owner over the WebSocket."""
        with self.lock:
            task = self.state.tasks[task_id]
            stamp = now_iso()
            task.update(status=status, updated_at=stamp, version=task["version"] + 1, **fields)
            if status == "running" and not task["started_at"]:
                task["started_at"] = stamp
            if status in TERMINAL:
                task["finished_at"] = stamp
            task["cancellable"] = status == "queued" or (
                status == "running" and task["type"] == "video" and bool(fields.get("ark_queued")))
            task.pop("ark_queued", None)
            update = {key: task[key] for key in ("id", "status", "version", "updated_at")}
            for key in ("result_urls", "video_url", "last_frame_url", "error", "image_errors"):
                if task.get(key):
                    update[key] = task[key]
            for key in ("cost", "currency", "usage"):  # as chalicelib/live.py's COST_FIELDS: a cost of 0 too
                if task.get(key) is not None:
                    update[key] = task[key]
            if status == "queued":
                update["queue_position"] = self._queue_position(task)
            owner = self.state.owners[task_id]
        if broadcast:
            self.broadcast(owner, {"type": "task_update", "data": self.with_signed_links(update)})
        return dict(task)

    def succeed(self, task_id: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            task = self.state.tasks[task_id]
            count = task["params"].get("max_images", 1) if task["type"] == "image" else 0
        if task["type"] == "image":
            urls = [f"{self.api_url}/media/{task_id}-{index}.png" for index in range(1, count + 1)]
            return self.set_status(task_id, "succeeded", result_urls=urls, **fields)
        return self.set_status(task_id, "succeeded", video_url=f"{self.api_url}/media/{task_id}.mp4",
                               last_frame_url=f"{self.api_url}/media/{task_id}-last.png")

    def task(self, task_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.state.tasks[task_id])

    def set_circuit(self, model_id: str, state: str, reason: str | None = None) -> None:
        """A model's breaker moves on its own (Ark refusing its calls), and admins hear of it at once."""
        circuit = {"state": state, "since": None if state == "closed" else now_iso(), "reason": reason}
        with self.lock:
            self.state.circuits[model_id] = circuit
        self.broadcast_to_admins({"type": "circuit", "data": {"model_id": model_id, "circuit": circuit}})

    def broadcast_to_admins(self, message: dict[str, Any]) -> None:
        with self.lock:
            admins = {name for name, user in self.state.users.items() if user["role"] == "admin"}
        for username in admins:
            self.broadcast(username, message)

    def record(self, actor: str, action: str, target: str, before: dict[str, Any] | None,
               after: dict[str, Any] | None, at: str | None = None) -> dict[str, Any]:
        entry = {"at": at or now_iso(), "actor": actor, "action": action, "target": target, "before": before,
                 "after": after}
        with self.lock:
            self.state.audit.append(entry)
        return entry

    def tasks_of(self, owner: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(task) for task_id, task in self.state.tasks.items() if self.state.owners[task_id] == owner]

    def requests_to(self, method: str, path_pattern: str) -> int:
        with self.lock:
            return sum(1 for seen_method, path in self.state.requests
                       if seen_method == method and re.fullmatch(path_pattern, path))

    def broadcast(self, username: str, message: dict[str, Any]) -> None:
        with self.lock:
            targets = [connection for connection, owner in self.sockets.items() if owner == username]
        for connection in targets:
            with contextlib.suppress(Exception):
                connection.send(json.dumps(message))

    # --- request handling -------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], headers: Any,
               body: Any) -> tuple[int, Any]:
        held = None
        with self.lock:
            self.state.requests.append((method, path))
            for candidate in self.state.held:
                if candidate.method == method and re.fullmatch(candidate.path_pattern, path):
                    self.state.held.remove(candidate)
                    held = candidate
                    break
            answer = self._answer(method, path, query, headers, body)
        if held is not None:
            held.arrived += 1
            held.release.wait(30)
        return answer

    def _answer(self, method: str, path: str, query: dict[str, str], headers: Any,
                body: Any) -> tuple[int, Any]:
        for injected in self.state.injected:
            if injected.method == method and re.fullmatch(injected.path_pattern, path):
                self.state.injected.remove(injected)
                return injected.status, injected.body
        try:
            return self._route(method, path, query, headers, body)
        except ApiFailure as failure:
            return failure.status, failure.body()

    def _route(self, method: str, path: str, query: dict[str, str], headers: Any,
               body: Any) -> tuple[int, Any]:
        if (method, path) == ("POST", "/api/users/login"):
            return self._login(body)
        user = self._authenticate(headers.get("Authorization"))
        routes: list[tuple[str, str, Callable[..., tuple[int, Any]]]] = [
            ("POST", r"/api/users/logout", lambda: self._logout(headers)),
            ("GET", r"/api/users/me", lambda: (200, self._public_user(user))),
            ("GET", r"/api/models", lambda: (200, {"models": [
                self._public_model(model) for model in self.state.models.values() if model["enabled"]]})),
            ("POST", r"/api/tasks", lambda: self._create_task(user, body, headers.get("Idempotency-Key"))),
            ("GET", r"/api/tasks", lambda: self._list_tasks(user, query)),
            ("GET", r"/api/tasks/([^/]+)", lambda task_id: (200, self._task_body(self._own_task(user, task_id)))),
            ("POST", r"/api/tasks/([^/]+)/cancel", lambda task_id: self._cancel(user, task_id)),
            ("POST", r"/api/tasks/([^/]+)/render",
             lambda task_id: self._render(user, task_id, body, headers.get("Idempotency-Key"))),
            ("DELETE", r"/api/tasks/([^/]+)", lambda task_id: self._delete_task(user, task_id)),
            ("POST", r"/api/uploads", lambda: self._new_upload(body)),
            ("POST", r"/api/ws/ticket", lambda: self._ticket(user)),
            ("GET", r"/api/admin/models", lambda: self._admin(user) or (200, {"models": [
                self._admin_model(model) for model in self.state.models.values()]})),
            ("POST", r"/api/admin/models", lambda: self._admin(user) or self._create_model(body)),
            ("PUT", r"/api/admin/models/([^/]+)",
             lambda model_id: self._admin(user) or self._update_model(model_id, body)),
            ("DELETE", r"/api/admin/models/([^/]+)",
             lambda model_id: self._admin(user) or self._delete_model(model_id)),
            ("GET", r"/api/admin/tasks", lambda: self._admin(user) or self._admin_tasks(query)),
            ("PUT", r"/api/tasks/([^/]+)/status",
             lambda task_id: self._admin(user) or self._operator_status(user, task_id, body)),
            ("GET", r"/api/admin/metrics", lambda: self._admin(user) or self._metrics(query)),
            ("GET", r"/api/admin/usage", lambda: self._admin(user) or self._usage(query)),
            ("POST", r"/api/admin/models/([^/]+)/circuit/close",
             lambda model_id: self._admin(user) or self._close_circuit(user, model_id)),
            ("GET", r"/api/admin/dlq", lambda: self._admin(user) or self._dead_letters()),
            ("POST", r"/api/admin/dlq/([^/]+)/replay",
             lambda lane: self._admin(user) or self._replay(user, lane, body)),
            ("GET", r"/api/admin/audit", lambda: self._admin(user) or self._audit(query)),
            ("GET", r"/api/admin/users", lambda: self._admin(user) or (200, {"users": [
                self._public_user(item) for item in self.state.users.values()]})),
            ("POST", r"/api/admin/users", lambda: self._admin(user) or self._create_user(body)),
            ("PUT", r"/api/admin/users/([^/]+)", lambda name: self._admin(user) or self._update_user(name, body)),
            ("DELETE", r"/api/admin/users/([^/]+)", lambda name: self._admin(user) or self._delete_user(name)),
        ]
        for route_method, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return action(*match.groups())
        raise ApiFailure(404, "not_found", f"No route {method} {path}.")

    # --- sessions ---------------------------------------------------------------------------------------

    def _login(self, body: dict[str, Any]) -> tuple[int, Any]:
        username = str(body.get("username", "")).lower()
        user = self.state.users.get(username)
        if not user or self.state.passwords.get(username) != body.get("password") or user["disabled"]:
            raise ApiFailure(401, "invalid_credentials", "Invalid username or password.")
        token = secrets.token_urlsafe(16)
        self.state.tokens[token] = username
        return 200, {"token": token, "role": user["role"], "expires_at": "2999-01-01T00:00:00Z"}

    def _authenticate(self, authorization: str | None) -> dict[str, Any]:
        token = (authorization or "").removeprefix("Bearer ")
        username = self.state.tokens.get(token)
        if not username or username not in self.state.users:
            raise ApiFailure(401, "invalid_token", "The session has ended; log in again.")
        return self.state.users[username]

    def _logout(self, headers: Any) -> tuple[int, Any]:
        self.state.tokens.pop(headers.get("Authorization", "").removeprefix("Bearer "), None)
        return 200, {"status": "logged_out"}

    @staticmethod
    def _admin(user: dict[str, Any]) -> None:
        if user["role"] != "admin":
            raise ApiFailure(403, "forbidden", "This route is for administrators.")

    def _ticket(self, user: dict[str, Any]) -> tuple[int, Any]:
        ticket = secrets.token_urlsafe(16)
        self.state.tickets[ticket] = user["username"]
        return 200, {"ticket": ticket, "url": f"{self.ws_url}/?ticket={ticket}", "expires_at": now_iso()}

    def redeem_ticket(self, ticket: str) -> str | None:
        with self.lock:
            return None if self.sockets_refused else self.state.tickets.pop(ticket, None)

    # --- tasks ------------------------------------------------------------------------------------------

    def _new_task(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        task_id = f"t{next(self._ids):05d}"
        stamp = now_iso()
        params = body.get("params") or {key: body[key] for key in IMAGE_PARAMS if key in body}
        task = {"id": task_id, "type": body["type"], "model_id": body["model_id"], "status": "queued",
                "prompt": body.get("prompt"), "images": body.get("images", []), "params": params,
                "references": body.get("references", []), "render_of": body.get("render_of"), "warnings": [],
                "external_id": None, "error": None, "result_urls": [], "video_url": None, "last_frame_url": None,
                "created_at": stamp, "updated_at": stamp, "started_at": None, "finished_at": None, "version": 1,
                "cancellable": True}
        self.state.tasks[task_id] = task
        self.state.owners[task_id] = owner
        return task

    def _create_task(self, user: dict[str, Any], body: dict[str, Any], key: str | None) -> tuple[int, Any]:
        if key and (user["username"], key) in self.state.idempotency:
            return 201, {"id": self.state.idempotency[(user["username"], key)], "status": "queued"}
        model = self.state.models.get(body.get("model_id", ""))
        if model is None:
            raise validation_failure("model_id", "unknown model")
        if not model["enabled"]:
            raise ApiFailure(409, "model_disabled", f"Model {model['model_id']!r} is disabled.")
        prompt = body.get("prompt") or ""
        if body.get("type") == "image" and not prompt.strip():
            raise validation_failure("prompt", "String should have at least 1 character")
        if len(prompt) > capabilities.PROMPT_MAX_CHARS:
            raise validation_failure("prompt", f"String should have at most {capabilities.PROMPT_MAX_CHARS} characters")
        for index, image in enumerate(body.get("images", [])):
            upload = image.removeprefix("upload:")
            if image.startswith("upload:") and not self.state.uploads.get(upload, {}).get("received"):
                raise validation_failure(f"images[{index}]", f"unknown upload {upload!r}")
        model_id, username = model["model_id"], user["username"]
        if self.state.usage.get(model_id, 0) >= model["daily_quota"]:
            raise ApiFailure(429, "quota_exceeded", f"The daily quota of {model_id!r} is used up.",
                             {"quota": "model", "model_id": model_id})
        user_quota = model["user_daily_quota"]
        if user_quota is not None and self.state.user_usage.get((model_id, username), 0) >= user_quota:
            raise ApiFailure(429, "quota_exceeded", f"Your daily quota of {model_id!r} is used up.",
                             {"quota": "user", "model_id": model_id})
        self.state.usage[model_id] = self.state.usage.get(model_id, 0) + 1
        self.state.user_usage[(model_id, username)] = self.state.user_usage.get((model_id, username), 0) + 1
        task = self._new_task(username, body)
        if key:
            self.state.idempotency[(username, key)] = task["id"]
        return 201, {"id": task["id"], "status": "queued"}

    def _render(self, user: dict[str, Any], task_id: str, body: dict[str, Any], key: str | None,
                ) -> tuple[int, Any]:
        """A succeeded draft made in full as a new task with the draft's prompt and settings (`render_of`)."""
        draft = self._own_task(user, task_id)
        if not draft["params"].get("draft"):
            raise ApiFailure(409, "not_a_draft", "Only a draft video can be rendered.")
        if draft["status"] != "succeeded":
            raise ApiFailure(409, "draft_not_succeeded", f"The draft is {draft['status']}.",
                             {"status": draft["status"]})
        params = {key: value for key, value in draft["params"].items() if key != "draft"}
        status, created = self._create_task(user, {
            "type": "video", "model_id": draft["model_id"], "prompt": draft["prompt"], "render_of": task_id,
            "params": {**params, **(body.get("params") or {})}}, key)
        return status, {**created, "render_of": task_id}

    def _queue_position(self, task: dict[str, Any]) -> int | None:
        if task["status"] != "queued":
            return None
        queued = sorted((item["created_at"], item["id"]) for item in self.state.tasks.values()
                        if item["status"] == "queued" and item["model_id"] == task["model_id"])
        return queued.index((task["created_at"], task["id"])) + 1

    def _task_body(self, task: dict[str, Any]) -> dict[str, Any]:
        return self.with_signed_links({**task, "queue_position": self._queue_position(task)})

    def _own_task(self, user: dict[str, Any], task_id: str) -> dict[str, Any]:
        if self.state.owners.get(task_id) != user["username"]:
            raise ApiFailure(404, "task_not_found", f"No task {task_id!r}.")
        return self.state.tasks[task_id]

    def _list_tasks(self, user: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
        return self._task_page(user["username"], query, self._task_body)

    def _task_page(self, owner: str | None, query: dict[str, str],
                   present: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[int, Any]:
        """Tasks (of `owner`, or everyone's), newest first, filtered like the API's listings, a page at a time."""
        chosen = [task for task_id, task in self.state.tasks.items()
                  if owner is None or self.state.owners[task_id] == owner]
        chosen = [task for task in chosen if all(not query.get(key) or task[key] == query[key]
                                                 for key in ("status", "type", "model_id"))]
        chosen.sort(key=lambda task: (task["created_at"], task["id"]), reverse=True)
        page, next_cursor = self._page(chosen, query)
        return 200, {"tasks": [present(task) for task in page], "next_cursor": next_cursor}

    def _page(self, items: list[Any], query: dict[str, str], size: int = 20) -> tuple[list[Any], str | None]:
        start = int(query.get("cursor") or 0)
        if self.state.empty_pages:
            self.state.empty_pages -= 1
            return [], str(start)
        limit = int(query.get("limit") or size)
        return items[start:start + limit], str(start + limit) if start + limit < len(items) else None

    def _cancel(self, user: dict[str, Any], task_id: str) -> tuple[int, Any]:
        task = self._own_task(user, task_id)
        if not task["cancellable"]:
            raise ApiFailure(409, "not_cancellable", "The task is no longer cancellable.")
        return 200, self._task_body(self.set_status(task_id, "cancelled"))

    def _delete_task(self, user: dict[str, Any], task_id: str) -> tuple[int, Any]:
        task = self._own_task(user, task_id)
        if task["status"] not in TERMINAL:
            raise ApiFailure(409, "conflict", "Only finished tasks can be deleted.")
        del self.state.tasks[task_id]
        return 200, {"deleted": task_id}

    def _new_upload(self, body: dict[str, Any]) -> tuple[int, Any]:
        upload_id = secrets.token_hex(8)
        self.state.uploads[upload_id] = {**body, "received": False}
        return 201, {"upload_id": upload_id, "url": f"{self.api_url}/fake-s3/{upload_id}",
                     "fields": {"key": f"uploads/{upload_id}", "policy": "fake-policy", "x-amz-signature": "fake"},
                     "expires_at": now_iso()}

    def receive_upload(self, upload_id: str, fields: dict[str, str], file_bytes: bytes) -> int:
        with self.lock:
            upload = self.state.uploads.get(upload_id)
            if upload is None or fields.get("key") != f"uploads/{upload_id}" or len(file_bytes) != upload["size"]:
                return 400
            upload["received"] = True
            return 204

    # --- admin ------------------------------------------------------------------------------------------

    @staticmethod
    def _public_user(user: dict[str, Any]) -> dict[str, Any]:
        return dict(user)

    @staticmethod
    def _public_model(model: dict[str, Any]) -> dict[str, Any]:
        entry = capabilities.find(model.get("family") or model["upstream_model"])
        return {**{key: model[key] for key in ("model_id", "type", "display_name", "enabled", "defaults")},
                **lifecycle_of(model), "capabilities": capabilities.client_capabilities(entry) if entry else None}

    def _admin_model(self, model: dict[str, Any]) -> dict[str, Any]:
        used = self.state.usage.get(model["model_id"], 0)
        running = sum(1 for task in self.state.tasks.values()
                      if task["model_id"] == model["model_id"] and task["status"] == "running")
        return {**model, **self._public_model(model), "slots_in_use": running, "usage_today": {
            "day": datetime.now(UTC).date().isoformat(), "timezone": "Asia/Shanghai", "used": used,
            "limit": model["daily_quota"], "remaining": max(0, model["daily_quota"] - used)}}

    def _create_model(self, body: dict[str, Any]) -> tuple[int, Any]:
        if body.get("model_id") in self.state.models:
            raise ApiFailure(409, "conflict", "A model with this id exists.")
        model = {"user_daily_quota": None, "max_running_per_user": None, "defaults": {}, "enabled": True,
                 "display_name": body.get("model_id"), **body}
        self.state.models[model["model_id"]] = model
        return 201, self._admin_model(model)

    def _update_model(self, model_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        model = self.state.models.get(model_id)
        if model is None:
            raise ApiFailure(404, "not_found", f"No model {model_id!r}.")
        body = dict(body)
        force = body.pop("force", False)
        stuck = self.state.incompatible_queued.get(model_id, 0)
        if stuck and body.get("upstream_model", model["upstream_model"]) != model["upstream_model"]:
            if not force:
                raise ApiFailure(409, "incompatible_queued_tasks", f"{stuck} queued task(s) cannot move.",
                                 {"count": stuck, "task_ids": []})
            self.state.incompatible_queued.pop(model_id)
        model.update(body)
        if model.get("defaults") is None:
            model["defaults"] = {}
        return 200, self._admin_model(model)

    def _delete_model(self, model_id: str) -> tuple[int, Any]:
        if self.state.models.pop(model_id, None) is None:
            raise ApiFailure(404, "not_found", f"No model {model_id!r}.")
        return 200, {"deleted": model_id}

    def _create_user(self, body: dict[str, Any]) -> tuple[int, Any]:
        username = str(body.get("username", "")).lower()
        if username in self.state.users:
            raise validation_failure("username", "this username is taken")
        user = {"username": username, "role": body.get("role", "user"), "disabled": bool(body.get("disabled")),
                "created_at": now_iso()}
        self.state.users[username] = user
        self.state.passwords[username] = body["password"]
        return 201, dict(user)

    def _update_user(self, username: str, body: dict[str, Any]) -> tuple[int, Any]:
        user = self.state.users.get(username)
        if user is None:
            raise ApiFailure(404, "not_found", f"No user {username!r}.")
        if "password" in body:
            self.state.passwords[username] = body["password"]
        user.update({key: body[key] for key in ("role", "disabled") if key in body})
        return 200, dict(user)

    def _delete_user(self, username: str) -> tuple[int, Any]:
        if self.state.users.pop(username, None) is None:
            raise ApiFailure(404, "not_found", f"No user {username!r}.")
        return 200, {"deleted": username}

    # --- operations console -----------------------------------------------------------------------------

    def _admin_tasks(self, query: dict[str, str]) -> tuple[int, Any]:
        username = query.get("user")
        if username and username not in self.state.users:
            raise ApiFailure(404, "user_not_found", f"No user {username!r}.")
        return self._task_page(username or None, query, self._admin_task_body)

    def _admin_task_body(self, task: dict[str, Any]) -> dict[str, Any]:
        owner = self.state.owners[task["id"]]
        return {"cost": None, "currency": None, "usage": None, **self._task_body(task), "user": owner,
                "user_id": f"usr_{owner}", "upstream_message": None}

    def _operator_status(self, user: dict[str, Any], task_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        """docs/api.md, "Tasks": the one transition an operator may make, as the real route judges it."""
        task = self.state.tasks.get(task_id)
        if task is None:
            raise ApiFailure(404, "task_not_found", f"No task {task_id!r}.")
        status = body.get("status")
        if status not in {"queued", "running", *TERMINAL}:
            raise validation_failure("status", "not a task status")
        carried = {key for key in ("error", "result_urls", "video_url", "last_frame_url") if body.get(key) is not None}
        allowed = {"failed": {"error"}, "expired": {"error"},
                   "succeeded": {"result_urls", "video_url", "last_frame_url"}}.get(status, set())
        extra = sorted(carried - allowed)
        if extra:
            raise validation_failure(extra[0], f"a {status} task carries no {extra[0]}")
        before = task["status"]
        if status == "running":
            raise ApiFailure(409, "worker_only", "Only a lane worker starts a task.")
        if status == "queued" and not (before == "running" and task["type"] == "image"):
            raise ApiFailure(409, "video_at_ark" if task["type"] == "video" and before == "running"
                             else "illegal_transition", f"A {before} {task['type']} cannot go back to the queue.")
        if status == "succeeded" and not carried:
            raise validation_failure("result_urls" if task["type"] == "image" else "video_url",
                                     "a succeeded task needs its results")
        if status == "succeeded" and before != "running":
            raise ApiFailure(409, "illegal_transition", f"A {before} task cannot succeed.")
        if status in {"failed", "cancelled", "expired"}:
            if before not in {"queued", "running"}:
                raise ApiFailure(409, "illegal_transition", f"A {before} task cannot become {status}.",
                                 {"status": before})
            if task_id in self.state.generating_at_ark:
                raise ApiFailure(409, "generating_at_ark", "Ark is generating this video; it cannot be stopped.")
        fields = {key: body[key] for key in carried}
        changed = self.set_status(task_id, status, **fields)
        self.record(user["username"], "task.status", f"task:{task_id}", {"status": before}, {"status": status})
        # As the real route answers: the admin's view of the task, without the listing's `user` and `user_id`.
        return 200, {key: value for key, value in self._admin_task_body(changed).items()
                     if key not in {"user", "user_id"}}

    def _circuit(self, model_id: str) -> dict[str, Any]:
        return dict(self.state.circuits.get(model_id, CLOSED_CIRCUIT))

    def _metrics(self, query: dict[str, str]) -> tuple[int, Any]:
        window = query.get("window") or "1h"
        if window not in WINDOWS_S:
            raise validation_failure("window", "Input should be '1h' or '24h'")
        samples = WINDOWS_S[window] // SAMPLE_S
        last = int(time.time()) // SAMPLE_S * SAMPLE_S
        at = [iso(last - SAMPLE_S * (samples - 1 - index)) for index in range(samples)]
        models = []
        for model_id, model in self.state.models.items():
            counts = {status: sum(1 for task in self.state.tasks.values()
                                  if task["model_id"] == model_id and task["status"] == status)
                      for status in ("queued", "running")}
            entry = {"model_id": model_id, **counts, "concurrency": model["concurrency"],
                     "wait_s": {"p50": None, "p95": None}, "run_s": {"p50": None, "p95": None}, "outcomes": {},
                     "ark_429": 0, "ark_5xx": 0, "cost": 0, "currency": None, "circuit": self._circuit(model_id),
                     "series": {"at": at, "queued": [counts["queued"]] * samples,
                                "running": [counts["running"]] * samples}}
            entry.update(self.state.metrics.get(model_id, {}))
            models.append(entry)
        return 200, {"window": window, "models": models}

    def _usage(self, query: dict[str, str]) -> tuple[int, Any]:
        days = int(query.get("days") or 14)
        if not 1 <= days <= 31:
            raise validation_failure("days", "Input should be between 1 and 31")
        limit = min(int(query.get("limit") or 500), self.state.usage_page_max)
        page, next_cursor = self._page([dict(row) for row in self.state.usage_rows], {**query, "limit": str(limit)})
        return 200, {"timezone": "Asia/Shanghai", "rows": page, "next_cursor": next_cursor}

    def _close_circuit(self, user: dict[str, Any], model_id: str) -> tuple[int, Any]:
        model = self.state.models.get(model_id)
        if model is None:
            raise ApiFailure(404, "model_not_found", f"No model {model_id!r}.")
        before = self._circuit(model_id)
        self.state.circuits[model_id] = dict(CLOSED_CIRCUIT)
        self.record(user["username"], "circuit.close", f"model:{model_id}", before, dict(CLOSED_CIRCUIT))
        self.broadcast_to_admins({"type": "circuit",
                                  "data": {"model_id": model_id, "circuit": dict(CLOSED_CIRCUIT)}})
        return 200, {**self._admin_model(model), "circuit": dict(CLOSED_CIRCUIT)}

    def _dead_letters(self) -> tuple[int, Any]:
        return 200, {"queues": [{"lane": lane, "approximate": len(messages), "messages": [
            {**message, "task_status": self.state.tasks.get(message["task_id"], {}).get("status")}
            for message in messages]} for lane, messages in self.state.dlq.items()]}

    def _replay(self, user: dict[str, Any], lane: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Each chosen message goes back to its lane, unless its task has finished (dropped, never run twice)."""
        if lane not in self.state.dlq:
            raise ApiFailure(404, "lane_not_found", f"No dead-letter queue {lane!r}.")
        wanted = body.get("message_ids")
        messages = self.state.dlq[lane]
        chosen = [message for message in messages if wanted is None or message["message_id"] in wanted]
        replayed, dropped_reasons = 0, {}
        for message in chosen:
            task = self.state.tasks.get(message["task_id"])
            if task is None or task["status"] in TERMINAL:
                reason = "task_missing" if task is None else "task_finished"
                dropped_reasons[reason] = dropped_reasons.get(reason, 0) + 1
            else:
                replayed += 1
            messages.remove(message)
        dropped = sum(dropped_reasons.values())
        answer = {"replayed": replayed, "dropped": dropped, "dropped_reasons": dropped_reasons}
        self.record(user["username"], "dlq.replay", f"dlq:{lane}", None, answer)
        return 200, answer

    def _audit(self, query: dict[str, str]) -> tuple[int, Any]:
        entries = [entry for entry in reversed(self.state.audit)
                   if all(not query.get(key) or entry[key] == query[key] for key in ("actor", "target"))]
        page, next_cursor = self._page(entries, query, AUDIT_PAGE)
        return 200, {"entries": page, "next_cursor": next_cursor}


def media_bytes(name: str) -> tuple[bytes, str] | None:
    """Images and videos for result URLs: small PNGs and a one-second MP4 (with its last frame)."""
    if name.endswith("-last.png"):
        return render_still(320, 176, 24, 23, FAKE_LOOK), "image/png"
    if name.endswith(".png"):
        return render_picture("png", 256, 256, FAKE_LOOK), "image/png"
    if name.endswith(".mp4"):
        return render_video(320, 176, 24, FAKE_LOOK), "video/mp4"
    return None


def link_expired(query: str, now: float) -> bool:
    params = {key: values[0] for key, values in parse_qs(query).items()}
    if "X-Amz-Date" not in params:
        return False
    signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    return now > signed_at + int(params["X-Amz-Expires"])


def make_api_handler(fake: FakeArkflow) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            origin = self.headers.get("Origin")
            if origin:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Headers", "Authorization,Content-Type,Idempotency-Key")
                self.send_header("Access-Control-Allow-Methods", "GET,POST,PUT,DELETE,OPTIONS")
                self.send_header("Vary", "Origin")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_OPTIONS(self) -> None:
            self._send(204, b"")

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            raw = self._body()
            if url.path.startswith("/media/"):
                found = media_bytes(url.path.removeprefix("/media/"))
                if link_expired(url.query, fake.link_clock()):
                    self._send(403, b"Request has expired", "text/plain")
                elif found:
                    self._send(200, *found)
                else:
                    self._send(404, b"")
                return
            if url.path.startswith("/fake-s3/"):
                self._send(fake.receive_upload(url.path.removeprefix("/fake-s3/"), *self._multipart(raw)), b"")
                return
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                self._send(400, json.dumps({"error": {"code": "malformed_json", "message": "Bad JSON."}}).encode())
                return
            status, payload = fake.handle(self.command, url.path, query, self.headers, body)
            self._send(status, json.dumps(payload).encode())

        def _multipart(self, raw: bytes) -> tuple[dict[str, str], bytes]:
            header = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
            message = BytesParser(policy=HTTP).parsebytes(header + raw)
            fields: dict[str, str] = {}
            file_bytes = b""
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                if name == "file":
                    file_bytes = payload
                else:
                    fields[str(name)] = payload.decode()
            return fields, file_bytes

        do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    return Handler


@dataclass
class FakeStack:
    fake: FakeArkflow
    web_url: str


@contextlib.contextmanager
def run_fake_stack() -> Iterator[FakeStack]:
    """Fake API, fake WebSocket and the real static web server, each on a free port, until the block ends."""
    fake = FakeArkflow()
    api_server = ThreadingHTTPServer((HOST, 0), make_api_handler(fake))
    api_server.daemon_threads = True
    fake.api_url = f"http://{HOST}:{api_server.server_address[1]}"

    def refuse_unknown_tickets(connection: ServerConnection, request: Request) -> Response | None:
        ticket = parse_qs(urlsplit(request.path).query).get("ticket", [""])[0]
        username = fake.redeem_ticket(ticket)
        if username is None:
            return connection.respond(403, "Forbidden\n")
        connection.username = username  # type: ignore[attr-defined]
        return None

    def on_socket(connection: ServerConnection) -> None:
        with fake.lock:
            fake.sockets[connection] = connection.username  # type: ignore[attr-defined]
        try:
            for message in connection:
                if json.loads(message).get("action") == "ping":
                    connection.send(json.dumps({"type": "pong"}))
        except Exception:  # noqa: S110 - a dropped socket just ends this handler
            pass
        finally:
            with fake.lock:
                fake.sockets.pop(connection, None)

    ws_server: Server = serve(on_socket, HOST, 0, process_request=refuse_unknown_tickets)
    fake.ws_url = f"ws://{HOST}:{ws_server.socket.getsockname()[1]}"
    web_server = make_web_server(HOST, 0, {"apiBaseUrl": fake.api_url, "wsUrl": fake.ws_url})
    servers: list[Any] = [api_server, ws_server, web_server]
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    try:
        yield FakeStack(fake, f"http://{HOST}:{web_server.server_address[1]}")
    finally:
        fake.drop_sockets()
        for server in servers:
            server.shutdown()
        for thread in threads:
            thread.join(timeout=5)
