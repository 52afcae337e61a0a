"""The simulator's HTTP surface: Ark's `/api/v3` routes, result downloads and the `/_sim` admin endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from arksim import images, video
from arksim.callbacks import CallbackSender
from arksim.config import MalformedKind
from arksim.errors import SimError, invalid
from arksim.media import CONTENT_TYPES
from arksim.simulator import Simulator
from chalicelib.ark.capabilities import VIDEO_MAX_BODY_BYTES, VIDEO_STATUSES

REQUEST_ID_HEADER = "X-Client-Request-Id"
TICK_S = 0.05
GENERATION_ENDPOINTS = ("images.generate", "tasks.create")


@dataclass
class Call:
    endpoint: str
    request_id: str
    base_url: str
    model: str = "-"


Handler = Callable[[Request, Call, dict[str, Any]], Awaitable[Response]]


def create_app(sim: Simulator) -> Starlette:
    callbacks: CallbackSender | None = None

    def dispatch(changes: list[video.StatusChange]) -> None:
        if callbacks is not None:
            callbacks.dispatch(changes)

    def advance_tasks() -> None:
        changes = video.step(sim)
        for change in changes:
            if change.status == "succeeded":
                sim.stats.record_completion("video", change.task.model, change.task.id)
        dispatch(changes)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        nonlocal callbacks
        callbacks = CallbackSender(sim)

        async def tick() -> None:
            while True:
                advance_tasks()
                await asyncio.sleep(TICK_S)

        ticker = asyncio.create_task(tick())
        try:
            yield
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await callbacks.aclose()

    def ark_endpoint(endpoint: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            call = Call(endpoint, request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex,
                        str(request.base_url).rstrip("/"))
            try:
                _authenticate(sim, request)
                body = await _json_body(request, endpoint) if request.method == "POST" else {}
                if isinstance(body.get("model"), str):
                    call.model = sim.config.endpoints.get(body["model"], body["model"])
                serving = (sim.stats.serving(call.model) if endpoint in GENERATION_ENDPOINTS
                           else contextlib.nullcontext())
                with serving:
                    malformed = await _inject_faults(sim, endpoint, call.model)
                    response = await handler(request, call, body)
                if malformed is not None:
                    response = _malformed(response, malformed)
            except SimError as error:
                response = JSONResponse(error.body(call.request_id), error.status, headers=error.headers)
                if sim.config.should_retry_header:
                    response.headers["x-should-retry"] = sim.config.should_retry_header
            response.headers[REQUEST_ID_HEADER] = call.request_id
            response.headers["X-Request-Id"] = call.request_id
            sim.stats.record_call(endpoint, call.model, response.status_code)
            return response

        return serve

    async def generate_images(request: Request, call: Call, body: dict[str, Any]) -> Response:
        parsed = images.parse_request(sim, body)
        images.check_rate_limits(sim, parsed)
        if parsed.stream:
            return StreamingResponse(_streamed(parsed, call), media_type="text/event-stream")
        answer = await images.generate(sim, parsed, call.base_url)
        sim.stats.record_completion("image", parsed.model, call.request_id)
        return JSONResponse(answer)

    async def _streamed(parsed: images.ImageRequest, call: Call) -> AsyncIterator[str]:
        with sim.stats.serving(parsed.model):
            async for event in images.generate_stream(sim, parsed, call.base_url, call.request_id):
                yield event
        sim.stats.record_completion("image", parsed.model, call.request_id)

    async def create_task(request: Request, call: Call, body: dict[str, Any]) -> Response:
        advance_tasks()
        task = video.create_task(sim, body, call.base_url)
        dispatch([video.StatusChange(task, "queued", task.to_wire())])
        advance_tasks()
        answer = {"id": task.id}
        if task.spec.safety_identifier is not None:
            answer["safety_identifier"] = task.spec.safety_identifier
        return JSONResponse(answer)

    async def get_task(request: Request, call: Call, body: dict[str, Any]) -> Response:
        advance_tasks()
        task = video.find_task(sim, request.path_params["task_id"])
        call.model = task.model
        return JSONResponse(task.to_wire())

    async def list_tasks(request: Request, call: Call, body: dict[str, Any]) -> Response:
        advance_tasks()
        call.model = request.query_params.get("filter.model", "-")
        return JSONResponse(video.list_tasks(sim, request.query_params.multi_items()))

    async def delete_task(request: Request, call: Call, body: dict[str, Any]) -> Response:
        advance_tasks()
        task_id = request.path_params["task_id"]
        call.model = video.find_task(sim, task_id).model
        video.delete_task(sim, task_id)
        return JSONResponse({})

    async def download(request: Request) -> Response:
        name = request.path_params["filename"]
        media = sim.media.get(name.split(".")[0])
        if media is None or media.filename != name:
            return Response("NoSuchKey", 404, media_type="text/plain")
        if sim.now() - media.created_at > sim.config.result_ttl_s:
            return Response("AccessDenied: Request has expired", 403, media_type="text/plain")
        return Response(await run_in_threadpool(media.render), media_type=CONTENT_TYPES[media.kind])

    async def config(request: Request) -> Response:
        if request.method == "PUT":
            try:
                sim.configure(await request.json())
            except (ValueError, TypeError, ValidationError) as error:
                message = error.json() if isinstance(error, ValidationError) else str(error)
                return JSONResponse({"error": {"code": "InvalidConfig", "message": message}}, 400)
        return JSONResponse(sim.config.model_dump())

    async def stats(request: Request) -> Response:
        advance_tasks()
        return JSONResponse({
            **sim.stats.snapshot(),
            "tasks": {status: sim.tasks.count(status) for status in VIDEO_STATUSES},
        })

    async def completions(request: Request) -> Response:
        advance_tasks()
        return JSONResponse({"completions": list(sim.stats.completions), "now": time.time()})

    async def reset(request: Request) -> Response:
        sim.reset(everything=request.query_params.get("everything") in ("1", "true"))
        return JSONResponse({})

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            try:
                sim.clock.advance(float((await request.json())["advance_s"]))
            except (ValueError, KeyError, TypeError) as error:
                return JSONResponse({"error": {"code": "InvalidClock", "message": str(error)}}, 400)
            advance_tasks()
        return JSONResponse({"now": sim.now(), "frozen": sim.clock.frozen})

    tasks_path = "/api/v3/contents/generations/tasks"
    return Starlette(
        routes=[
            Route("/api/v3/images/generations", ark_endpoint("images.generate", generate_images),
                  methods=["POST"]),
            Route(tasks_path, ark_endpoint("tasks.create", create_task), methods=["POST"]),
            Route(tasks_path, ark_endpoint("tasks.list", list_tasks), methods=["GET"]),
            Route(tasks_path + "/{task_id}", ark_endpoint("tasks.get", get_task), methods=["GET"]),
            Route(tasks_path + "/{task_id}", ark_endpoint("tasks.delete", delete_task), methods=["DELETE"]),
            Route("/_sim/media/{filename}", download, methods=["GET"]),
            Route("/_sim/config", config, methods=["GET", "PUT"]),
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/completions", completions, methods=["GET"]),
            Route("/_sim/reset", reset, methods=["POST"]),
            Route("/_sim/clock", clock, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )


def _authenticate(sim: Simulator, request: Request) -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    expected = sim.config.api_key
    if scheme.lower() != "bearer" or not key.strip() or (expected and key.strip() != expected):
        raise SimError(401, "AuthenticationError")


async def _json_body(request: Request, endpoint: str) -> dict[str, Any]:
    raw = await request.body()
    if endpoint == "tasks.create" and len(raw) > VIDEO_MAX_BODY_BYTES:
        raise invalid("body", f"the request body must be at most {VIDEO_MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SimError(400, "InvalidParameter")  # not a JSON object
    return body


async def _inject_faults(sim: Simulator, endpoint: str, model: str) -> MalformedKind | None:
    """One draw per request decides between rate limit, server error, timeout, slow answer, malformed answer
    (returned: the handler still does the work, then its answer is spoilt) or none."""
    config = sim.config
    if endpoint not in config.fault_endpoints:
        return None
    draw = sim.draw()
    threshold = config.rate_limit_fraction
    if draw < threshold:
        sim.stats.faults["rate_limit"] += 1
        code = config.rate_limit_code or (
            "ModelAccountIpmRateLimitExceeded" if endpoint == "images.generate"
            else "ModelAccountRpmRateLimitExceeded")
        raise SimError(429, code, headers=sim.retry_after_header(), model=model)
    threshold += config.server_error_fraction
    if draw < threshold:
        sim.stats.faults["server_error"] += 1
        raise SimError(500, "InternalServiceError")
    threshold += config.timeout_fraction
    if draw < threshold:
        sim.stats.faults["timeout"] += 1
        await asyncio.sleep(config.timeout_hang_s)
        raise SimError(504, "InternalServiceError")
    threshold += config.slow_fraction
    if draw < threshold:
        sim.stats.faults["slow"] += 1
        await asyncio.sleep(config.slow_extra_s)
        return None
    threshold += config.malformed_answer_fraction
    if draw < threshold:
        sim.stats.faults["malformed_answer"] += 1
        kinds = config.malformed_answer_kinds
        return kinds[min(int(sim.draw() * len(kinds)), len(kinds) - 1)]
    return None


def _malformed(response: Response, kind: MalformedKind) -> Response:
    """A successful answer spoilt the way `kind` says; answers that are not JSON objects (SSE) stay as they are."""
    if kind == "not_json":
        return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", 200, media_type="text/html")
    answer = json.loads(response.body) if isinstance(response, JSONResponse) and response.status_code == 200 else None
    if not isinstance(answer, dict):
        return response
    if kind == "null_values":  # e.g. `created: null`, `id: null`, `status: null`
        answer = {key: value if isinstance(value, dict | list) else None for key, value in answer.items()}
    elif kind == "scalar_items":  # e.g. `data: ["x"]`, `items: ["x"]`
        answer = {key: ["x"] if isinstance(value, list) else value for key, value in answer.items()}
    elif kind == "list_objects":  # e.g. `usage: [1]`, `content: [1]`
        answer = {key: [1] if isinstance(value, dict) else value for key, value in answer.items()}
    else:  # string_error
        answer = {**answer, "error": "boom"}
    return JSONResponse(answer)
