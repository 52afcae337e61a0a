"""Fault injection for the lifecycle model: actors that crash, stall or meet errors between any two operations.

Every piece of the system the model drives (a lane delivery, a poller or sweeper run, an API request) runs as an
`Actor` on a thread of its own, one at a time: the `Stage` starts it and waits until it ends or stalls. An actor
carries at most one `Fault`, aimed at its Nth operation (of all, or of those on one task), where an operation is a
DynamoDB write (seen at botocore, below pynamodb) or a call to Ark (seen at the HTTP transport in front of the
simulator). So a fault lands between any two writes of any path, with nothing in chalicelib knowing about it:

  * `crash`        the function instance dies just before the operation (`LambdaCrash`, which no handler catches);
  * `stall`        the actor stops there and the model carries on; a later rule lets it go on. A stall at an Ark
                   generation call is a call in flight at Ark (`held_at_ark` aims at those only); a stall before a
                   write is a stale read that lands later (a sweeper, worker or operator acting on what it read
                   before others moved the task on);
  * `answer_lost`  Ark does the work, then the instance dies before reading the answer;
  * DynamoDB       `InternalServerError` / `ProvisionedThroughputExceededException` as botocore raises them once
                   its own retries are spent; the write is not applied;
  * Ark errors     a timeout, a 500 or a 429, answered before Ark did any work;
  * malformed 200  Ark does the work and answers 200 with a body that does not fit its schema
                   (`created: null`, `data: ["x"]`, `usage: [1]`, `error: "boom"`, or not JSON at all).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from arksim.app import create_app
from arksim.simulator import Simulator
from chalicelib.store.records import TaskRecord

# How long (real seconds) the model waits for an actor to end or stall before calling it hung.
ACTOR_HANG_S = 60.0

DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
DYNAMODB_ERRORS = ("InternalServerError", "ProvisionedThroughputExceededException")
ARK_ERRORS = ("ark_timeout", "ark_500", "ark_429")
MALFORMED = ("created_null", "data_strings", "usage_list", "error_string", "not_json")
# What each fault is aimed at: `any` operation, a DynamoDB `write`, or a call to `ark`.
FAULT_TARGETS: dict[str, str] = {
    "crash": "any",
    "stall": "any",
    "held_at_ark": "ark",  # a stall aimed at the calls to Ark only
    "answer_lost": "ark",
    **{code: "write" for code in DYNAMODB_ERRORS},
    **{kind: "ark" for kind in (*ARK_ERRORS, *MALFORMED)},
}
GENERATION_ENDPOINTS = frozenset({"images.generate", "tasks.create"})
# Ark refused these before doing any work.
REFUSALS = frozenset({401, 403, 429})


class LambdaCrash(BaseException):
    """The function instance died here (killed at its timeout, out of memory): nothing after this point runs.

    A BaseException, so that no `except Exception` in the code under test can swallow it, as none could swallow
    a real crash."""


@dataclass(frozen=True)
class Fault:
    kind: str
    # Which operation of the kind's target it hits, counted from 0 within one actor's run.
    at: int
    # Count only the operations on this task (its record's writes, the Ark calls made for it).
    task_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_TARGETS:
            raise ValueError(f"unknown fault {self.kind!r}")

    @property
    def target(self) -> str:
        return FAULT_TARGETS[self.kind]

    def __repr__(self) -> str:  # what Hypothesis prints in a failing example
        on = f", task_id={self.task_id!r}" if self.task_id else ""
        return f"Fault({self.kind!r}, at={self.at}{on})"


@dataclass(eq=False)
class Actor:
    """One run of one function: a lane delivery, a poller or sweeper run, an API request."""

    name: str
    kind: str  # worker / poller / sweeper / api
    # The function's timeout: a run stalled longer than this is killed, as Lambda would.
    timeout_s: float
    started_at: float
    fault: Fault | None = None
    # The task a lane delivery or a task route is about (Ark calls without a callback URL are charged to it).
    task_id: str | None = None
    state: str = "running"  # running / stalled / done
    result: Any = None
    error: BaseException | None = None
    crashed: bool = False
    killed: bool = False
    fault_fired: bool = False
    # The op index at which the fault fired (all operations counted together).
    fault_op: int | None = None
    operations: int = 0
    # The operations its fault counts (all of them, or those on the fault's task), overall and per target.
    counted: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"write": 0, "ark": 0})
    # Set while stalled inside an Ark call.
    stalled_call: ArkCall | None = None
    thread: threading.Thread | None = None

    def next_fault(self, target: str, task_id: str | None) -> str | None:
        """Count one operation of `target` (write / ark) on `task_id` (when known); the fault to apply to it, if
        the plan aims here."""
        index_overall = self.operations
        self.operations += 1
        fault = self.fault
        if fault is not None and fault.task_id is not None and fault.task_id != task_id:
            return None  # not one of the operations this fault counts
        index_in_target = self.counts[target]
        self.counts[target] += 1
        index_counted = self.counted
        self.counted += 1
        if fault is None or self.fault_fired or fault.target not in ("any", target):
            return None
        if fault.at != (index_counted if fault.target == "any" else index_in_target):
            return None
        self.fault_fired = True
        self.fault_op = index_overall
        return fault.kind

    @property
    def faulted(self) -> bool:
        return self.fault_fired or self.crashed or self.killed

    @property
    def aborted(self) -> bool:
        """Ended without finishing its work (crashed, killed, or raised)."""
        return self.crashed or self.error is not None


class Stage:
    """Runs actors strictly one at a time, each on its own thread so that it can stall mid-way."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._local = threading.local()
        self.stalled: list[Actor] = []

    def current(self) -> Actor | None:
        return getattr(self._local, "actor", None)

    def run(self, actor: Actor, work: Callable[[], Any]) -> Actor:
        """Start `work` as `actor`; returns once it ended or stalled."""

        def body() -> None:
            self._local.actor = actor
            try:
                actor.result = work()
            except LambdaCrash:
                actor.crashed = True
            except BaseException as error:  # reported by the model, which decides what a raise means
                actor.error = error
            finally:
                with self._lock:
                    actor.state = "done"
                    self._lock.notify_all()

        actor.thread = threading.Thread(target=body, name=f"actor-{actor.name}", daemon=True)
        actor.thread.start()
        return self._wait(actor)

    def stall(self, actor: Actor) -> None:
        """Called on the actor's own thread: stop here until resumed (or killed)."""
        with self._lock:
            actor.state = "stalled"
            self.stalled.append(actor)
            self._lock.notify_all()
            self._lock.wait_for(lambda: actor.state == "running")
        if actor.killed:
            raise LambdaCrash

    def resume(self, actor: Actor, kill: bool = False) -> Actor:
        """Let a stalled actor go on (or die where it stands); returns once it ended or stalled again."""
        with self._lock:
            self.stalled.remove(actor)
            actor.killed = kill
            actor.state = "running"
            self._lock.notify_all()
        return self._wait(actor)

    def _wait(self, actor: Actor) -> Actor:
        with self._lock:
            if not self._lock.wait_for(lambda: actor.state != "running", timeout=ACTOR_HANG_S):
                raise RuntimeError(f"actor {actor.name} neither ended nor stalled within {ACTOR_HANG_S} s")
        if actor.state == "done" and actor.thread is not None:
            actor.thread.join()
        return actor


# --- DynamoDB ---------------------------------------------------------------------------------------------------


@contextmanager
def dynamodb_faults(stage: Stage) -> Iterator[None]:
    """Apply the current actor's fault to its DynamoDB writes, for every botocore client (pynamodb's included)."""
    original = BaseClient._make_api_call

    def make_api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        actor = stage.current()
        if actor is None or operation not in DYNAMODB_WRITES or client.meta.service_model.service_name != "dynamodb":
            return original(client, operation, params)
        fault = actor.next_fault("write", _task_written(params))
        if fault == "crash":
            raise LambdaCrash
        if fault == "stall":
            stage.stall(actor)
        elif fault in DYNAMODB_ERRORS:
            status = 500 if fault == "InternalServerError" else 400
            raise ClientError({"Error": {"Code": fault, "Message": f"{fault} (injected)"},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, operation)
        return original(client, operation, params)

    BaseClient._make_api_call = make_api_call  # type: ignore[method-assign]
    try:
        yield
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


def _task_written(params: dict[str, Any]) -> str | None:
    """The task whose record a write (or a transaction) changes, if it changes one."""
    writes = [next(iter(item.values())) for item in params.get("TransactItems", [])] or [params]
    for write in writes:
        if write.get("TableName") == TaskRecord.Meta.table_name:
            key = write.get("Key") or write.get("Item") or {}
            return key.get("task_id", {}).get("S")
    return None


# --- Ark ----------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ArkCall:
    """One request that reached Ark's door, and what came of it."""

    endpoint: str
    actor: Actor | None
    # Whose work it is: the task named in a create's callback URL, else the actor's task.
    task_id: str | None
    path: str
    status: int | None = None
    body: Any = None
    # Whether it got to the simulator (Ark may have done work), and whether the answer reached the caller.
    reached_ark: bool = False
    answered: bool = False
    # The clock when the call was held at Ark (a stalled call).
    stalled_at: float | None = None
    # Its place among the actor's operations.
    op: int | None = None
    # The malformed 200 its caller got in place of Ark's answer (one of MALFORMED), if any.
    malformed: str | None = None

    @property
    def external_id(self) -> str | None:
        """The Ark task a get or delete names, or the one a create made."""
        if self.endpoint in ("tasks.get", "tasks.delete"):
            return self.path.rsplit("/", 1)[-1]
        if self.endpoint == "tasks.create" and isinstance(self.body, dict):
            return self.body.get("id")
        return None

    @property
    def may_have_worked(self) -> bool:
        return self.endpoint in GENERATION_ENDPOINTS and self.reached_ark and self.status not in REFUSALS


class ArkObserver(Protocol):
    """What the model learns from Ark's door (every method is called on the calling actor's thread)."""

    def call_arrived(self, call: ArkCall) -> None: ...

    def call_stalled(self, call: ArkCall) -> None: ...

    def before_forward(self, call: ArkCall) -> None: ...

    def call_answered(self, call: ArkCall) -> None: ...


def endpoint_of(request: httpx.Request) -> str | None:
    path = request.url.path
    if path.endswith("/images/generations"):
        return "images.generate"
    if "/contents/generations/tasks" not in path:
        return None  # a results download, or the simulator's own routes
    has_id = not path.rstrip("/").endswith("/contents/generations/tasks")
    if request.method == "POST":
        return "tasks.create"
    if request.method == "DELETE":
        return "tasks.delete"
    return "tasks.get" if has_id else "tasks.list"


def owner_in_callback(body: Any) -> str | None:
    """The task id arkflow put in a create's callback URL."""
    url = body.get("callback_url") if isinstance(body, dict) else None
    if not url:
        return None
    return (parse_qs(urlsplit(url).query).get("task_id") or [None])[0]


class SimulatorTransport(httpx.BaseTransport):
    """The simulator's ASGI app, called in process on the caller's thread: no server, no port, no ticker.

    Without its lifespan the simulator sends no callbacks of its own (the model delivers them), and its tasks
    move only when it is asked something or stepped, on the clock it shares with the app.
    """

    def __init__(self, sim: Simulator) -> None:
        self._asgi = httpx.ASGITransport(app=create_app(sim))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return asyncio.run(call())


class ArkDoor(httpx.BaseTransport):
    """Ark as arkflow reaches it: the simulator, behind the current actor's fault, with every call observed.

    Results downloads (the simulator's media URLs) pass straight through; they are not Ark API calls.
    """

    def __init__(self, sim: Simulator, stage: Stage, observer: ArkObserver) -> None:
        self.sim = sim
        self.stage = stage
        self.observer = observer
        self._inner = SimulatorTransport(sim)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_of(request)
        if endpoint is None:
            return self._inner.handle_request(request)
        actor = self.stage.current()
        body = _json_or_none(request.content)
        task_id = owner_in_callback(body) if endpoint == "tasks.create" else None
        call = ArkCall(endpoint, actor, task_id or (actor.task_id if actor else None), request.url.path)
        fault = actor.next_fault("ark", call.task_id) if actor else None
        call.op = actor.operations - 1 if actor else None
        if fault == "crash":
            raise LambdaCrash
        self.observer.call_arrived(call)
        if fault == "ark_timeout":
            self.observer.call_answered(call)  # with no status: the caller got no answer
            raise httpx.ReadTimeout("no answer in time (injected)", request=request)
        if fault in ("ark_500", "ark_429"):
            return self._answer(call, *_ERROR_ANSWERS[fault])
        if fault in ("stall", "held_at_ark"):
            self._stall_in_flight(call, body)
        self.observer.before_forward(call)
        response = self._inner.handle_request(request)
        call.reached_ark = True
        call.status = response.status_code
        call.body = _json_or_none(response.content)
        if fault == "answer_lost":
            self.observer.call_answered(call)
            raise LambdaCrash
        if fault in MALFORMED and response.status_code == 200:
            response = httpx.Response(200, **malformed_answer(endpoint, call.body, fault))
            call.malformed = fault
        call.answered = True
        self.observer.call_answered(call)
        return response

    def _stall_in_flight(self, call: ArkCall, body: Any) -> None:
        """Hold the call at Ark: counted in flight by the simulator's own stats until the actor goes on."""
        assert call.actor is not None
        call.actor.stalled_call = call
        call.stalled_at = self.sim.now()
        model = body.get("model") if isinstance(body, dict) else None
        serving = self.sim.stats.serving(str(model)) if call.endpoint in GENERATION_ENDPOINTS else _nothing()
        with serving:
            self.observer.call_stalled(call)
            self.stage.stall(call.actor)
        call.actor.stalled_call = None

    def _answer(self, call: ArkCall, status: int, body: dict[str, Any]) -> httpx.Response:
        call.status, call.body, call.answered = status, body, True
        self.observer.call_answered(call)
        return httpx.Response(status, json=body)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


_ERROR_ANSWERS: dict[str, tuple[int, dict[str, Any]]] = {
    "ark_500": (500, {"error": {"code": "InternalServiceError",
                                "message": "The service encountered an unexpected internal error."}}),
    "ark_429": (429, {"error": {"code": "ModelAccountRpmRateLimitExceeded",
                                "message": "The request has exceeded the requests per minute limit."}}),
}


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


def malformed_answer(endpoint: str, real: Any, kind: str) -> dict[str, Any]:
    """A 200 body that does not fit Ark's schema, made from the real answer (Ark did the work): keyword arguments
    for `httpx.Response`."""
    if kind == "not_json":
        return {"content": b"<html><body>502 Bad Gateway</body></html>", "headers": {"content-type": "text/html"}}
    body = dict(real) if isinstance(real, dict) else {}
    if kind == "error_string":
        # In place of the answer (a list keeps its page count, so the bad item is what gets read).
        return {"json": {**body, "items": [{"error": "boom"}]} if endpoint == "tasks.list" else {"error": "boom"}}
    if kind == "data_strings":
        field = {"images.generate": "data", "tasks.get": "content", "tasks.list": "items"}.get(endpoint)
        return {"json": {**body, field: ["x"]} if field else ["x"]}
    if endpoint == "tasks.list":
        return {"json": {**body, "items": [_malformed_task(item, kind) for item in body.get("items") or [{}]]}}
    if endpoint == "tasks.get":
        return {"json": _malformed_task(body, kind)}
    if kind == "created_null":
        return {"json": {**body, "id" if endpoint == "tasks.create" else "created": None}}
    return {"json": {**body, "usage": [1]}}


def _malformed_task(item: Any, kind: str) -> dict[str, Any]:
    item = dict(item) if isinstance(item, dict) else {}
    if kind == "created_null":
        return {**item, "created_at": None}
    return {**item, "usage": [1]}
