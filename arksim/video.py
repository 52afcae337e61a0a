"""Seedance video tasks (docs/ark.md, "Videos"): validation, the task board and its
state machine `queued -> running -> succeeded | failed`, `expired`, `cancelled`, plus list and delete rules."""

from __future__ import annotations

import math
import re
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arksim.errors import SimError, documented, error_item, invalid, missing
from arksim.fields import optional_bool, optional_enum, optional_int, optional_str
from arksim.inputs import InputImage, inspect_image
from chalicelib.ark import limits
from chalicelib.ark.model_ids import VIDEO_MODELS_WITHOUT_LAST_FRAME

if TYPE_CHECKING:
    from arksim.simulator import Simulator

ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "expired")
LISTABLE_STATUSES = ("queued", "running", "cancelled", "succeeded", "failed")
# Pushed to callback_url; `cancelled` never is (docs/ark.md, "Videos").
CALLBACK_STATUSES = ("queued", "running", "succeeded", "failed", "expired")
UNSUPPORTED_FIELDS = ("generate_audio", "draft", "priority", "tools")  # Seedance 1.5 / 2.x only
FRAME_ROLES = ("first_frame", "last_frame")
CANCELLED_RETENTION_S = 24 * 3600
FLAG = re.compile(r"--(\w+)\s+(\S+)")
FLAG_NAMES = {
    "resolution": "resolution", "rs": "resolution",
    "ratio": "ratio", "rt": "ratio",
    "duration": "duration", "dur": "duration",
    "frames": "frames",
    "seed": "seed",
}


@dataclass
class VideoTask:
    id: str
    model: str  # resolved `<name>-<version>`
    requested_model: str  # as sent (may be an Endpoint ID); `filter.model` matches either
    resolution: str
    ratio: str
    duration: int | None
    frames: int | None
    seed: int
    return_last_frame: bool
    service_tier: str
    execution_expires_after: int
    callback_url: str | None
    safety_identifier: str | None
    base_url: str
    created_at: float
    outcome: str  # what the task ends as once it has run: succeeded / failed / expired
    outcome_error: dict[str, str] | None = None
    status: str = "queued"
    updated_at: float = 0.0
    finishes_at: float = math.inf
    error: dict[str, str] | None = None
    video_file: str | None = None
    last_frame_file: str | None = None
    tokens: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return limits.VIDEO_OUTPUT_SIZES[self.ratio][self.resolution]

    @property
    def frame_count(self) -> int:
        return self.frames if self.frames is not None else (self.duration or 0) * limits.VIDEO_FPS

    def to_wire(self) -> dict[str, Any]:
        """The GET body (also what callbacks and list items carry)."""
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "error": self.error,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
            "seed": self.seed,
            "resolution": self.resolution,
            "ratio": self.ratio,
            "framespersecond": limits.VIDEO_FPS,
            "service_tier": self.service_tier,
            "execution_expires_after": self.execution_expires_after,
        }
        if self.frames is not None:
            body["frames"] = self.frames
        else:
            body["duration"] = self.duration
        if self.safety_identifier is not None:
            body["safety_identifier"] = self.safety_identifier
        if self.status == "succeeded":
            content = {"video_url": f"{self.base_url}/_sim/media/{self.video_file}"}
            if self.last_frame_file:
                content["last_frame_url"] = f"{self.base_url}/_sim/media/{self.last_frame_file}"
            body["content"] = content
            body["usage"] = {"completion_tokens": self.tokens, "total_tokens": self.tokens}
        return body


@dataclass(frozen=True)
class StatusChange:
    task: VideoTask
    status: str
    payload: dict[str, Any]


class TaskBoard:
    def __init__(self) -> None:
        self.tasks: dict[str, VideoTask] = {}
        self.last_step = 0.0

    def clear(self) -> None:
        self.tasks.clear()

    def count(self, status: str, model: str | None = None) -> int:
        return sum(1 for task in self.tasks.values()
                   if task.status == status and (model is None or task.model == model))


# --- create ---------------------------------------------------------------------------------------------------

def new_task_id(sim: Simulator) -> str:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(sim.now()))
    suffix = "".join(sim.random.choices(string.ascii_lowercase + string.digits, k=5))
    return f"cgt-{stamp}-{suffix}"


def create_task(sim: Simulator, body: dict[str, Any], base_url: str) -> VideoTask:
    """Validate a create body and enqueue the task; raises SimError with Ark's code on any problem."""
    model = sim.resolve_model(body.get("model"), "video")
    prompt, images = _content(sim, body.get("content"), model)
    flags = _prompt_flags(prompt)
    if sim.config.reject_unsupported_video_fields:
        for name in UNSUPPORTED_FIELDS:
            if body.get(name) is not None:
                raise invalid(name, f"is not supported by model {model}", "InvalidParameter.UnsupportedParameter")

    resolution = (optional_enum(body, "resolution", limits.VIDEO_RESOLUTIONS) or flags.get("resolution")
                  or limits.VIDEO_DEFAULT_RESOLUTION)
    ratio = optional_enum(body, "ratio", limits.VIDEO_RATIOS) or flags.get("ratio")
    ratio = ratio or ("adaptive" if images else "16:9")
    if ratio == "adaptive":
        if not images:
            raise invalid("ratio", "`adaptive` needs a first-frame image")
        ratio = _nearest_ratio(images[0])
    frames = optional_int(body, "frames", limits.VIDEO_MIN_FRAMES, limits.VIDEO_MAX_FRAMES)
    if frames is not None and not limits.is_valid_frames(frames):
        raise invalid("frames", "must be 25 + 4n within [29, 289]")
    duration = optional_int(body, "duration", limits.VIDEO_MIN_DURATION, limits.VIDEO_MAX_DURATION)
    if frames is None and duration is None:
        frames = flags.get("frames")
        duration = None if frames is not None else flags.get("duration", limits.VIDEO_DEFAULT_DURATION)
    seed = optional_int(body, "seed", limits.VIDEO_MIN_SEED, limits.VIDEO_MAX_SEED)
    seed = flags.get("seed", -1) if seed is None else seed
    if seed == -1:
        seed = sim.random.randint(0, limits.VIDEO_MAX_SEED)
    # Accepted and validated; they change nothing in a solid-colour clip.
    optional_bool(body, "camera_fixed")
    optional_bool(body, "watermark")
    return_last_frame = bool(optional_bool(body, "return_last_frame"))
    service_tier = optional_enum(body, "service_tier", limits.VIDEO_SERVICE_TIERS) or "default"
    expires_after = optional_int(body, "execution_expires_after", limits.VIDEO_MIN_EXPIRES_AFTER,
                                 limits.VIDEO_MAX_EXPIRES_AFTER) or limits.VIDEO_DEFAULT_EXPIRES_AFTER
    callback_url = optional_str(body, "callback_url")
    if callback_url is not None and not callback_url.startswith(("http://", "https://")):
        raise invalid("callback_url", "must be an http(s) URL")
    safety_identifier = optional_str(body, "safety_identifier", max_length=64)

    if sim.config.input_sensitive_marker in prompt:
        raise SimError(400, "InputTextSensitiveContentDetected")
    _check_limits(sim, model)

    now = sim.now()
    outcome, outcome_error = _draw_outcome(sim, prompt)
    task = VideoTask(
        id=new_task_id(sim), model=model, requested_model=body["model"],
        resolution=resolution, ratio=ratio, duration=duration, frames=frames, seed=seed,
        return_last_frame=return_last_frame, service_tier=service_tier, execution_expires_after=expires_after,
        callback_url=callback_url, safety_identifier=safety_identifier, base_url=base_url,
        created_at=now, updated_at=now, outcome=outcome, outcome_error=outcome_error,
    )
    sim.tasks.tasks[task.id] = task
    return task


def _content(sim: Simulator, content: Any, model: str) -> tuple[str, list[InputImage]]:
    if content is None or content == []:
        raise missing("content")
    if not isinstance(content, list) or not all(isinstance(item, dict) for item in content):
        raise invalid("content", "must be a list of objects")
    texts: list[str] = []
    images: list[InputImage] = []
    roles: list[str | None] = []
    for item in content:
        kind = item.get("type")
        if kind == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise invalid("content.text", "must be a string")
            texts.append(text)
        elif kind == "image_url":
            role = item.get("role")
            if role not in (None, *FRAME_ROLES):
                raise invalid("content.role", f"`{role}` is not supported by model {model}")
            image_url = item.get("image_url")
            images.append(_video_image(sim, image_url.get("url") if isinstance(image_url, dict) else None))
            roles.append(role)
        else:
            raise invalid("content.type", f"`{kind}` is not supported by model {model}")
    if len(texts) > 1:
        raise invalid("content", "at most one text item is allowed")
    if not texts and not images:
        raise missing("content")
    if len(images) == 1 and roles[0] not in (None, "first_frame"):
        raise invalid("content.role", "a single image must be the first frame")
    if len(images) == 2:
        if sorted(role or "" for role in roles) != sorted(FRAME_ROLES):
            raise invalid("content.role", "two images need the roles first_frame and last_frame")
        if model in VIDEO_MODELS_WITHOUT_LAST_FRAME:
            raise invalid("content.role", f"model {model} does not support a last frame")
        if roles[0] == "last_frame":  # the first frame decides the adaptive ratio
            images.reverse()
    if len(images) > limits.VIDEO_MAX_IMAGES:
        raise invalid("content", f"at most {limits.VIDEO_MAX_IMAGES} images (first and last frame)")
    return (texts[0] if texts else ""), images


def _video_image(sim: Simulator, url: Any) -> InputImage:
    found = inspect_image(url, "content.image_url", limits.VIDEO_INPUT_FORMATS, sim.media)
    if found.size_bytes is not None and found.size_bytes >= limits.VIDEO_INPUT_MAX_BYTES:
        raise invalid("content.image_url", f"each image must be smaller than {limits.VIDEO_INPUT_MAX_BYTES} bytes")
    if found.width is None or found.height is None:
        return found
    low, high = limits.VIDEO_INPUT_MIN_SIDE_EXCLUSIVE, limits.VIDEO_INPUT_MAX_SIDE_EXCLUSIVE
    if not (low < found.width < high and low < found.height < high):
        raise invalid("content.image_url", f"each side must be within ({low}, {high}) px")
    aspect = found.width / found.height
    if not limits.VIDEO_INPUT_MIN_ASPECT_EXCLUSIVE < aspect < limits.VIDEO_INPUT_MAX_ASPECT_EXCLUSIVE:
        raise invalid("content.image_url", "the aspect ratio width/height must be within (0.4, 2.5)")
    return found


def _nearest_ratio(image: InputImage) -> str:
    if image.width is None or image.height is None:
        return "16:9"
    aspect = math.log(image.width / image.height)
    return min(limits.VIDEO_OUTPUT_SIZES, key=lambda ratio: abs(
        math.log(limits.VIDEO_OUTPUT_SIZES[ratio]["1080p"][0] / limits.VIDEO_OUTPUT_SIZES[ratio]["1080p"][1])
        - aspect))


def _prompt_flags(prompt: str) -> dict[str, Any]:
    """`--name value` suffix parameters that shape the result; weak validation: a bad value is ignored
    (docs/ark.md, "Videos"). The body field wins when both are given."""
    flags: dict[str, Any] = {}
    for raw_name, raw_value in FLAG.findall(prompt):
        name = FLAG_NAMES.get(raw_name.lower())
        if name is None:
            continue
        try:
            value = _flag_value(name, raw_value)
        except ValueError:
            continue
        if value is not None:
            flags[name] = value
    return flags


def _flag_value(name: str, raw: str) -> Any:
    if name == "resolution":
        return raw if raw in limits.VIDEO_RESOLUTIONS else None
    if name == "ratio":
        return raw if raw in limits.VIDEO_RATIOS else None
    number = int(raw)
    if name == "duration":
        return number if limits.VIDEO_MIN_DURATION <= number <= limits.VIDEO_MAX_DURATION else None
    if name == "frames":
        return number if limits.is_valid_frames(number) else None
    return number if limits.VIDEO_MIN_SEED <= number <= limits.VIDEO_MAX_SEED else None


def _check_limits(sim: Simulator, model: str) -> None:
    config = sim.config
    if sim.tasks.count("queued") >= config.video_max_queued:
        raise SimError(429, "QuotaExceeded", headers=sim.retry_after_header())  # too many queued tasks
    if not sim.video_window.try_take(model, 1, config.video_requests_per_minute, sim.now()):
        raise SimError(429, "ModelAccountRpmRateLimitExceeded", headers=sim.retry_after_header())


def _draw_outcome(sim: Simulator, prompt: str) -> tuple[str, dict[str, str] | None]:
    config = sim.config
    if config.output_sensitive_marker in prompt or sim.draw() < config.output_sensitive_fraction:
        return "failed", error_item("OutputVideoSensitiveContentDetected")
    if sim.draw() < config.video_fail_fraction:
        return "failed", error_item("InternalServiceError")
    if sim.draw() < config.video_expire_fraction:
        return "expired", None
    return "succeeded", None


# --- the state machine ------------------------------------------------------------------------------------------

def step(sim: Simulator) -> list[StatusChange]:
    """Apply every transition due by now, in time order, and return them (for callbacks).

    Events are processed one at a time at the instant they happen, so a clock jumped forward by hours yields
    the same history (and slot hand-overs) as one that ticked through them.
    """
    now = sim.now()
    board = sim.tasks
    changes: list[StatusChange] = []
    cursor = max(board.last_step, min((task.created_at for task in board.tasks.values()), default=now))
    while True:
        event = _next_event(sim, cursor)
        if event is None or event[0] > now:
            break
        cursor, task, status = event
        _apply(sim, task, status, cursor)
        changes.append(StatusChange(task, status, task.to_wire()))
    board.last_step = now
    _purge(sim, now)
    return changes


def _next_event(sim: Simulator, cursor: float) -> tuple[float, VideoTask, str] | None:
    config = sim.config
    candidates: list[tuple[float, VideoTask, str]] = []
    running: dict[str, int] = {}
    first_queued: dict[str, VideoTask] = {}
    for task in sim.tasks.tasks.values():
        if task.status not in ACTIVE:
            continue
        candidates.append((task.created_at + task.execution_expires_after, task, "expired"))
        if task.status == "running":
            running[task.model] = running.get(task.model, 0) + 1
            candidates.append((task.finishes_at, task, task.outcome))
        elif task.model not in first_queued or task.created_at < first_queued[task.model].created_at:
            first_queued[task.model] = task
    for model, task in first_queued.items():
        if running.get(model, 0) < config.video_max_running:
            candidates.append((max(cursor, task.created_at + config.video_queue_s), task, "running"))
    return min(candidates, key=lambda event: event[0], default=None)


def _apply(sim: Simulator, task: VideoTask, status: str, at: float) -> None:
    task.status = status
    task.updated_at = at
    if status == "running":
        task.finishes_at = at + sim.config.video_run_s
        sim.stats.observe_running(task.model, sim.tasks.count("running", task.model))
    elif status == "failed":
        task.error = task.outcome_error
    elif status == "succeeded":
        width, height = task.size
        task.video_file = sim.media.add("mp4", width, height, at, frames=task.frame_count).filename
        if task.return_last_frame:
            task.last_frame_file = sim.media.add("png", width, height, at).filename
        # ≈ w × h × 24 fps × seconds / 1024 (Ark's pricing)
        task.tokens = width * height * task.frame_count // 1024


def _purge(sim: Simulator, now: float) -> None:
    tasks = sim.tasks.tasks
    for task_id in [task.id for task in tasks.values()
                    if now - task.created_at > limits.VIDEO_TASK_RETENTION_S
                    or (task.status == "cancelled" and now - task.updated_at > CANCELLED_RETENTION_S)]:
        del tasks[task_id]


# --- get / list / delete ------------------------------------------------------------------------------------------

def find_task(sim: Simulator, task_id: str) -> VideoTask:
    task = sim.tasks.tasks.get(task_id)
    if task is None:
        raise SimError(404, "NotFound.TaskId", documented("NotFound", resource="task", value=task_id), "id")
    return task


def list_tasks(sim: Simulator, params: list[tuple[str, str]]) -> dict[str, Any]:
    single = dict(params)
    page_num = _page_param(single, "page_num", 1)
    page_size = _page_param(single, "page_size", 20)
    status = optional_enum(single, "filter.status", LISTABLE_STATUSES)
    service_tier = optional_enum(single, "filter.service_tier", limits.VIDEO_SERVICE_TIERS) or "default"
    model = single.get("filter.model")
    task_ids = {value for name, value in params if name == "filter.task_ids"}
    window_start = sim.now() - limits.VIDEO_TASK_RETENTION_S
    matches = [
        task for task in sim.tasks.tasks.values()
        if task.created_at >= window_start
        and task.service_tier == service_tier
        and (status is None or task.status == status)
        and (not model or model in (task.model, task.requested_model))
        and (not task_ids or task.id in task_ids)
    ]
    matches.sort(key=lambda task: task.created_at, reverse=True)
    page = matches[(page_num - 1) * page_size: page_num * page_size]
    return {"items": [task.to_wire() for task in page], "total": len(matches)}


def _page_param(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise invalid(name, "must be an integer within [1, 500]")
    return int(raw)


def delete_task(sim: Simulator, task_id: str) -> None:
    """queued -> cancelled; finished -> record removed; running or cancelled -> refused (docs/ark.md, "Videos")."""
    task = find_task(sim, task_id)
    if task.status == "queued":
        _apply(sim, task, "cancelled", sim.now())
    elif task.status in TERMINAL:
        del sim.tasks.tasks[task_id]
    else:
        raise invalid("id", f"the task {task_id} is {task.status} and cannot be cancelled or deleted")
