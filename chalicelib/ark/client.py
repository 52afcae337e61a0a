"""httpx clients for Ark's Seedream image API and Seedance video task API (shared ark-api.md sections 2-4).

Neither client retries: a repeated image request or task creation bills again, so the queue decides retries
from the typed error (`chalicelib.ark.errors`). The API key is sent only in the Authorization header and never
appears in a log line or an error message.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Self

import httpx

from chalicelib.ark.errors import (
    ArkError,
    ArkTransportError,
    classify_error,
    error_from_response,
    parse_retry_after,
)
from chalicelib.ark.models import SEEDANCE_1_0_PRO, SEEDREAM_4_5
from chalicelib.settings import Settings

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Client-Request-Id"
# One image (or a group of up to 15) takes from seconds to many minutes [ark-api.md 2.6]; the caller passes a
# read timeout that fits its own deadline (e.g. the lane's Lambda timeout).
IMAGE_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=5.0)
# Task calls only enqueue or read a record. All phases together stay well inside the API function's 28 s: a
# cancel or an Ark callback makes one of these calls there.
VIDEO_TIMEOUT = httpx.Timeout(connect=3.0, read=12.0, write=5.0, pool=2.0)


@dataclass(frozen=True)
class GeneratedImage:
    url: str | None
    size: str
    b64_json: str | None = None


@dataclass(frozen=True)
class ImageError:
    index: int
    code: str
    message: str


@dataclass(frozen=True)
class ImageUsage:
    generated_images: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class ImageGenerationResult:
    model: str
    created: int
    images: list[GeneratedImage]
    errors: list[ImageError]
    usage: ImageUsage | None


@dataclass(frozen=True)
class TaskError:
    code: str
    message: str


@dataclass(frozen=True)
class VideoUsage:
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class VideoTask:
    id: str
    model: str
    status: str
    error: TaskError | None
    video_url: str | None
    last_frame_url: str | None
    resolution: str | None
    ratio: str | None
    duration: int | None
    frames: int | None
    seed: int | None
    usage: VideoUsage | None
    created_at: int
    updated_at: int
    safety_identifier: str | None = None
    execution_expires_after: int | None = None

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> VideoTask:
        error = body.get("error")
        content = body.get("content") or {}
        usage = body.get("usage")
        return cls(
            id=body["id"],
            model=body.get("model", ""),
            status=body["status"],
            error=TaskError(str(error.get("code", "")), str(error.get("message", ""))) if error else None,
            video_url=content.get("video_url"),
            last_frame_url=content.get("last_frame_url"),
            resolution=body.get("resolution"),
            ratio=body.get("ratio"),
            duration=body.get("duration"),
            frames=body.get("frames"),
            seed=body.get("seed"),
            usage=VideoUsage(usage["completion_tokens"], usage.get("total_tokens", usage["completion_tokens"]))
            if usage
            else None,
            created_at=int(body.get("created_at", 0)),
            updated_at=int(body.get("updated_at", 0)),
            safety_identifier=body.get("safety_identifier"),
            execution_expires_after=body.get("execution_expires_after"),
        )


@dataclass(frozen=True)
class VideoTaskPage:
    items: list[VideoTask]
    total: int


def text_content(text: str) -> dict[str, Any]:
    """A `content[]` item carrying the prompt."""
    return {"type": "text", "text": text}


def image_content(url: str, role: str | None = None) -> dict[str, Any]:
    """A `content[]` image item; `role` is `first_frame` or `last_frame` (required when both are sent)."""
    item: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if role:
        item["role"] = role
    return item


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


class _ArkHttpClient:
    default_timeout: httpx.Timeout

    def __init__(self, base_url: str, api_key: str, http: httpx.Client | None = None,
                 timeout: httpx.Timeout | None = None) -> None:
        if not api_key:
            raise ValueError("an Ark API key is required (ARK_API_KEY)")
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._owns_http = http is None
        self._http = http or httpx.Client()
        self._timeout = timeout or self.default_timeout

    @classmethod
    def from_settings(cls, settings: Settings, timeout: httpx.Timeout | None = None) -> Self:
        return cls(settings.ark_base_url, settings.ark_api_key, timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def _request(self, method: str, path: str, *, json_body: dict[str, Any] | None = None,
                 params: list[tuple[str, Any]] | None = None) -> Any:
        request_id = uuid.uuid4().hex
        headers = {"Authorization": f"Bearer {self._api_key}", REQUEST_ID_HEADER: request_id}
        try:
            response = self._http.request(method, f"{self._base_url}{path}", json=json_body, params=params,
                                          headers=headers, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise ArkTransportError("RequestTimeout", self._redact(
                f"{method} {path} got no answer in time ({type(exc).__name__}); request id {request_id}"
            )) from None
        except httpx.TransportError as exc:
            raise ArkTransportError("ConnectionError", self._redact(
                f"{method} {path} failed to reach Ark ({type(exc).__name__}: {exc}); request id {request_id}"
            )) from None
        body = self._json(response)
        if response.is_success:
            return body
        error = error_from_response(response.status_code, body,
                                    parse_retry_after(response.headers.get("Retry-After")))
        error = self._sanitized(error)
        log.warning("ark %s %s -> %s %s (request id %s)", method, path, response.status_code, error.code,
                    request_id)
        raise error

    def _sanitized(self, error: ArkError) -> ArkError:
        if self._api_key not in error.message:
            return error
        return classify_error(error.code, self._redact(error.message), error.http_status or 0,
                              getattr(error, "retry_after", None))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None


class VolcImageClient(_ArkHttpClient):
    """`POST /images/generations` (Seedream 4.x), synchronous and without streaming."""

    default_timeout = IMAGE_TIMEOUT

    def create_image_task(self, prompt: str, images: list[str] | None = None, size: str | None = None,
                          model: str = SEEDREAM_4_5, *, sequential_image_generation: str | None = None,
                          max_images: int | None = None, watermark: bool | None = None,
                          response_format: str | None = None) -> ImageGenerationResult:
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
        })
        payload = self._request("POST", "/images/generations", json_body=body)
        return self._parse_generation(payload)

    def _parse_generation(self, payload: Any) -> ImageGenerationResult:
        if not isinstance(payload, dict):
            raise ArkTransportError("InvalidResponse", "Ark answered 200 without a JSON body")
        images: list[GeneratedImage] = []
        errors: list[ImageError] = []
        for index, item in enumerate(payload.get("data") or []):
            if item.get("error"):
                errors.append(ImageError(index, str(item["error"].get("code", "")),
                                         str(item["error"].get("message", ""))))
            else:
                images.append(GeneratedImage(url=item.get("url"), size=str(item.get("size", "")),
                                             b64_json=item.get("b64_json")))
        top_error = payload.get("error")
        if not images and top_error:
            # A 200 that carries only a top-level error is a failed request [ark-api.md 2.4].
            status = 500 if str(top_error.get("code", "")).startswith("InternalServiceError") else 400
            raise self._sanitized(error_from_response(status, payload))
        usage = payload.get("usage")
        return ImageGenerationResult(
            model=str(payload.get("model", "")),
            created=int(payload.get("created", 0)),
            images=images,
            errors=errors,
            usage=ImageUsage(usage.get("generated_images", 0), usage.get("output_tokens", 0),
                             usage.get("total_tokens", 0)) if usage else None,
        )


class VolcVideoClient(_ArkHttpClient):
    """`/contents/generations/tasks` (Seedance): create, get, list, cancel-or-delete."""

    default_timeout = VIDEO_TIMEOUT
    _tasks_path = "/contents/generations/tasks"

    def create_video_task(self, content: list[dict[str, Any]], model: str = SEEDANCE_1_0_PRO,
                          callback_url: str | None = None, *, resolution: str | None = None,
                          ratio: str | None = None, duration: int | None = None, frames: int | None = None,
                          seed: int | None = None, camera_fixed: bool | None = None,
                          watermark: bool | None = None, return_last_frame: bool | None = None,
                          service_tier: str | None = None, execution_expires_after: int | None = None,
                          safety_identifier: str | None = None) -> str:
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
        })
        payload = self._request("POST", self._tasks_path, json_body=body)
        return str(payload["id"])

    def get_task_status(self, task_id: str) -> VideoTask:
        return VideoTask.from_wire(self._request("GET", f"{self._tasks_path}/{task_id}"))

    def list_tasks(self, page_num: int = 1, page_size: int = 20, status: str | None = None,
                   task_ids: list[str] | None = None, model: str | None = None) -> VideoTaskPage:
        """One page of the account's tasks of the last 7 days, newest first."""
        params: list[tuple[str, Any]] = [("page_num", page_num), ("page_size", page_size)]
        if status:
            params.append(("filter.status", status))
        if model:
            params.append(("filter.model", model))
        params.extend(("filter.task_ids", task_id) for task_id in task_ids or ())
        payload = self._request("GET", self._tasks_path, params=params)
        return VideoTaskPage(items=[VideoTask.from_wire(item) for item in payload.get("items") or []],
                             total=int(payload.get("total", 0)))

    def cancel_or_delete(self, task_id: str) -> None:
        """Cancel a task Ark still has queued, or delete a finished one's record (a running task refuses)."""
        self._request("DELETE", f"{self._tasks_path}/{task_id}")
