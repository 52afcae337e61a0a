"""httpx clients for Ark's Seedream image API and Seedance video task API (docs/ark.md).

Neither client retries: a repeated image request or task creation bills again, so the queue decides retries
from the typed error (`chalicelib.ark.errors`). Every answer is parsed with its schema (`chalicelib.ark.answers`)
before anything reads it, and every call ends by its deadline (`chalicelib.ark.deadline`). The API key is sent only
in the Authorization header and never appears in a log line or an error message.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from chalicelib.ark.answers import (
    ImageGenerationAnswer,
    ImageGenerationResult,
    VideoTask,
    VideoTaskCreated,
    VideoTaskDeleted,
    VideoTaskPage,
)
from chalicelib.ark.capabilities import model as ark_model
from chalicelib.ark.deadline import deadline_for_call, deadline_transport, running_call
from chalicelib.ark.errors import (
    ArkError,
    ArkInvalidResponseError,
    ArkTransportError,
    capped,
    classify_error,
    error_from_response,
    parse_retry_after,
)
from chalicelib.settings import Settings

log = logging.getLogger(__name__)

Answer = TypeVar("Answer", bound=BaseModel)

REQUEST_ID_HEADER = "X-Client-Request-Id"
# What a call names when its caller names no model (the lanes always name the task's).
DEFAULT_IMAGE_MODEL = ark_model("seedream-4.5").providers["volcengine"].model_id
DEFAULT_VIDEO_MODEL = ark_model("seedance-1.0-pro").providers["volcengine"].model_id
# One image (or a group of up to 15) takes from seconds to many minutes [docs/ark.md]; the caller passes a read
# timeout that fits its own deadline (e.g. the lane's Lambda timeout), and bounds the whole call with
# `call_deadline`.
IMAGE_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=5.0)
IMAGE_CALL_BUDGET_S = 600.0
# Task calls only enqueue or read a record. A cancel or an Ark callback makes them inside the API function's 28 s
# (two calls at most), the poller many in a row: each call, every phase included, ends within its budget.
VIDEO_TIMEOUT = httpx.Timeout(connect=3.0, read=8.0, write=5.0, pool=2.0)
VIDEO_CALL_BUDGET_S = 10.0
# An answer is read into memory: past this it is not one of Ark's (arkflow asks for image URLs, not base64).
MAX_ANSWER_BYTES = 32 * 1024 * 1024
# How much of an answer that does not fit its schema the log shows.
LOGGED_ANSWER_CHARS = 1000


def text_content(text: str) -> dict[str, Any]:
    """A `content[]` item carrying the prompt."""
    return {"type": "text", "text": text}


def image_content(url: str, role: str | None = None) -> dict[str, Any]:
    """A `content[]` image item; `role` is `first_frame` or `last_frame` (required when both are sent)."""
    item: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if role:
        item["role"] = role
    return item


def media_content(kind: str, url: str) -> dict[str, Any]:
    """A `content[]` item of reference mode: `kind` is `image`, `video` or `audio`."""
    return {"type": f"{kind}_url", f"{kind}_url": {"url": url}, "role": f"reference_{kind}"}


def draft_content(draft_task_id: str) -> dict[str, Any]:
    """The `content[]` of a render: the draft Ark made, whose prompt, inputs and settings it reuses."""
    return {"type": "draft_task", "draft_task": {"id": draft_task_id}}


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class _Received:
    status: int
    body: bytes
    # False when the body was longer than MAX_ANSWER_BYTES (`body` is then cut there).
    whole: bool
    retry_after: str | None


class _ArkHttpClient:
    default_timeout: httpx.Timeout
    default_budget_s: float

    def __init__(self, base_url: str, api_key: str | Callable[[], str], http: httpx.Client | None = None,
                 timeout: httpx.Timeout | None = None, budget_s: float | None = None) -> None:
        # A callable is asked on every request: the client lives as long as its container, the key may rotate.
        self._key_source = api_key if callable(api_key) else lambda: api_key
        if not self._api_key:
            raise ValueError("an Ark API key is required (ARK_API_KEY)")
        self._base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.Client(transport=deadline_transport())
        self._timeout = timeout or self.default_timeout
        self._budget_s = budget_s or self.default_budget_s

    @classmethod
    def from_settings(cls, settings: Settings, timeout: httpx.Timeout | None = None) -> Self:
        return cls(settings.ark_base_url, lambda: settings.ark_api_key, timeout=timeout)

    @property
    def _api_key(self) -> str:
        return self._key_source()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def _call(self, method: str, path: str, answer: type[Answer], *, json_body: dict[str, Any] | None = None,
              params: list[tuple[str, Any]] | None = None) -> Answer:
        """Send one request and return its answer parsed with `answer`; raises the typed error otherwise."""
        request_id = uuid.uuid4().hex
        received = self._send(method, path, request_id, json_body, params)
        if not 200 <= received.status < 300:
            raise self._error(method, path, request_id, received)
        problem = f"the answer is longer than {MAX_ANSWER_BYTES} bytes"
        if received.whole:
            try:
                return answer.model_validate_json(received.body)
            except ValidationError as invalid:
                problem = "; ".join(f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}"
                                    for item in invalid.errors(include_url=False, include_input=False)[:3])
        self._log_unfit(method, path, request_id, received, answer.__name__)
        raise ArkInvalidResponseError(capped(
            f"Ark's answer to {method} {path} (HTTP {received.status}) does not fit its documented shape: "
            f"{problem}; request id {request_id}"), received.status)

    def _error(self, method: str, path: str, request_id: str, received: _Received) -> ArkError:
        error = error_from_response(received.status, received.body if received.whole else b"",
                                    parse_retry_after(received.retry_after))
        if error.code == f"HTTP{received.status}":
            self._log_unfit(method, path, request_id, received, "Ark's error envelope")
        log.warning("ark %s %s -> %s %s (request id %s)", method, path, received.status, error.code, request_id)
        return self._sanitized(error)

    def _send(self, method: str, path: str, request_id: str, json_body: dict[str, Any] | None,
              params: list[tuple[str, Any]] | None) -> _Received:
        """The answer, read whole by the call's deadline (every phase, however slowly the bytes come)."""
        deadline = deadline_for_call(self._budget_s)
        headers = {"Authorization": f"Bearer {self._api_key}", REQUEST_ID_HEADER: request_id}
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise httpx.TimeoutException("no time left before the call's deadline")
            timeout = httpx.Timeout(**{phase: min(limit or left, left)
                                       for phase, limit in self._timeout.as_dict().items()})
            with running_call(deadline), self._http.stream(
                method, f"{self._base_url}{path}", json=json_body, params=params, headers=headers, timeout=timeout,
            ) as response:
                body, whole = bytearray(), True
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        whole = False
                        break
                    if time.monotonic() > deadline:  # also bounds transports other than `deadline_transport`
                        raise httpx.ReadTimeout("the call's deadline passed")
                return _Received(response.status_code, bytes(body), whole, response.headers.get("Retry-After"))
        except httpx.TimeoutException as exc:
            raise ArkTransportError("RequestTimeout", self._redact(
                f"{method} {path} got no whole answer by its deadline ({type(exc).__name__}); "
                f"request id {request_id}"
            )) from None
        except httpx.TransportError as exc:
            raise ArkTransportError("ConnectionError", self._redact(
                f"{method} {path} failed to reach Ark ({type(exc).__name__}: {exc}); request id {request_id}"
            )) from None

    def _log_unfit(self, method: str, path: str, request_id: str, received: _Received, shape: str) -> None:
        """Log (the start of) an answer that does not fit `shape`, redacted before it is cut (so no part of the key
        survives at the cut)."""
        shown = self._redact(received.body.decode("utf-8", errors="replace"))[:LOGGED_ANSWER_CHARS]
        more = f" [{len(received.body)} bytes in all]" if len(received.body) > LOGGED_ANSWER_CHARS else ""
        log.warning("ark %s %s -> HTTP %s does not fit %s (request id %s); received: %r%s", method, path,
                    received.status, shape, request_id, shown, more)

    def _sanitized(self, error: ArkError) -> ArkError:
        if self._api_key not in error.message:
            return error
        return classify_error(error.code, self._redact(error.message), error.http_status or 0,
                              getattr(error, "retry_after", None))


class VolcImageClient(_ArkHttpClient):
    """`POST /images/generations` (Seedream 4.x), synchronous and without streaming."""

    default_timeout = IMAGE_TIMEOUT
    default_budget_s = IMAGE_CALL_BUDGET_S

    def create_image_task(self, prompt: str, images: list[str] | None = None, size: str | None = None,
                          model: str = DEFAULT_IMAGE_MODEL, *, sequential_image_generation: str | None = None,
                          max_images: int | None = None, watermark: bool | None = None,
                          response_format: str | None = None, output_format: str | None = None,
                          tools: list[str] | None = None) -> ImageGenerationResult:
        """Generate one image (or a group with `sequential_image_generation="auto"`).

        Per-image failures in a group come back in `errors`; a request that produced nothing raises.
        """
        body = _without_none({
            "model": model,
            "prompt": prompt,
            "image": images or None,
            "size": size,
            "sequential_image_generation": sequential_image_generation,
            "sequential_image_generation_options": {"max_images": max_images} if max_images else None,
            "watermark": watermark,
            "response_format": response_format,
            "output_format": output_format,
            "tools": [{"type": tool} for tool in tools] if tools else None,
        })
        answer = self._call("POST", "/images/generations", ImageGenerationAnswer, json_body=body)
        result = answer.result()
        if not result.images and answer.error:
            # A 200 that carries only a top-level error is a failed request [docs/ark.md].
            status = 500 if answer.error.code.startswith("InternalServiceError") else 400
            raise self._sanitized(classify_error(answer.error.code, answer.error.message, status))
        return result


class VolcVideoClient(_ArkHttpClient):
    """`/contents/generations/tasks` (Seedance): create, get, list, cancel-or-delete."""

    default_timeout = VIDEO_TIMEOUT
    default_budget_s = VIDEO_CALL_BUDGET_S
    _tasks_path = "/contents/generations/tasks"

    def create_video_task(self, content: list[dict[str, Any]], model: str = DEFAULT_VIDEO_MODEL,
                          callback_url: str | None = None, *, resolution: str | None = None,
                          ratio: str | None = None, duration: int | None = None, frames: int | None = None,
                          seed: int | None = None, camera_fixed: bool | None = None,
                          watermark: bool | None = None, return_last_frame: bool | None = None,
                          service_tier: str | None = None, execution_expires_after: int | None = None,
                          safety_identifier: str | None = None, generate_audio: bool | None = None,
                          draft: bool | None = None, priority: int | None = None,
                          output_format: str | None = None) -> str:
        """Submit a task and return Ark's task id. Never retried here: a second create bills a second video."""
        body = _without_none({
            "model": model,
            "content": content,
            "callback_url": callback_url,
            "resolution": resolution,
            "ratio": ratio,
            "duration": duration,
            "frames": frames,
            "seed": seed,
            "camera_fixed": camera_fixed,
            "watermark": watermark,
            "return_last_frame": return_last_frame,
            "service_tier": service_tier,
            "execution_expires_after": execution_expires_after,
            "safety_identifier": safety_identifier,
            "generate_audio": generate_audio,
            "draft": draft,
            "priority": priority,
            "output_format": output_format,
        })
        return self._call("POST", self._tasks_path, VideoTaskCreated, json_body=body).id

    def get_task_status(self, task_id: str) -> VideoTask:
        return self._call("GET", f"{self._tasks_path}/{task_id}", VideoTask)

    def list_tasks(self, page_num: int = 1, page_size: int = 20, status: str | None = None,
                   task_ids: list[str] | None = None, model: str | None = None) -> VideoTaskPage:
        """One page of the account's tasks of the last 7 days, newest first."""
        params: list[tuple[str, Any]] = [("page_num", page_num), ("page_size", page_size)]
        if status:
            params.append(("filter.status", status))
        if model:
            params.append(("filter.model", model))
        params.extend(("filter.task_ids", task_id) for task_id in task_ids or ())
        return self._call("GET", self._tasks_path, VideoTaskPage, params=params)

    def cancel_or_delete(self, task_id: str) -> None:
        """Cancel a task Ark still has queued, or delete a finished one's record (a running task refuses)."""
        self._call("DELETE", f"{self._tasks_path}/{task_id}", VideoTaskDeleted)
