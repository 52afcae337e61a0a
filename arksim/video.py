"""Seedance video tasks (docs/ark.md, "Videos"): creation (`video_request` reads the body), the task board and its
state machine `queued -> running -> succeeded | failed`, `expired`, `cancelled`, plus list and delete rules."""

from __future__ import annotations

import math
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arksim.errors import OUTPUT_VIDEO_MODERATION_CODES, SimError, documented, error_item, invalid
from arksim.fields import optional_enum
from arksim.media import Look
from arksim.video_request import VideoSpec, read_create
from chalicelib.ark import capabilities
from chalicelib.ark.capabilities import SERVICE_TIERS, VIDEO_TASK_RETENTION_S

if TYPE_CHECKING:
    from arksim.simulator import Simulator

ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "expired")
LISTABLE_STATUSES = ("queued", "running", "cancelled", "succeeded", "failed")
# Pushed to callback_url; `cancelled` never is (docs/ark.md, "Videos").
CALLBACK_STATUSES = ("queued", "running", "succeeded", "failed", "expired")
CANCELLED_RETENTION_S = 24 * 3600
BEIJING_OFFSET_S = 8 * 3600  # task ids carry the time of creation in Beijing (UTC+8), as Ark's do


@dataclass
class VideoTask:
    id: str
    model: str  # resolved `<name>-<version>`
    model_key: str  # the capability table's key for it
    requested_model: str  # as sent (may be an Endpoint ID); `filter.model` matches either
    spec: VideoSpec
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
    def caps(self) -> capabilities.VideoCapabilities:
        video = capabilities.model(self.model_key).video
        assert video is not None
        return video

    @property
    def size(self) -> tuple[int, int]:
        return self.caps.output_sizes[self.spec.resolution][self.spec.ratio]

    @property
    def callback_url(self) -> str | None:
        return self.spec.callback_url

    @property
    def service_tier(self) -> str:
        return self.spec.service_tier

    @property
    def execution_expires_after(self) -> int:
        return self.spec.execution_expires_after

    @property
    def safety_identifier(self) -> str | None:
        return self.spec.safety_identifier

    def to_wire(self) -> dict[str, Any]:
        """The GET body (also what callbacks and list items carry)."""
        spec = self.spec
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "error": self.error,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
            "seed": spec.seed,
            "resolution": spec.resolution,
            "ratio": spec.ratio,
            "framespersecond": self.caps.fps,
            "service_tier": spec.service_tier,
            "execution_expires_after": spec.execution_expires_after,
        }
        if spec.frames is not None:
            body["frames"] = spec.frames
        else:
            body["duration"] = spec.duration
        extras = {"generate_audio": spec.generate_audio, "draft": spec.draft, "draft_task_id": spec.draft_task_id,
                  "priority": spec.priority, "safety_identifier": spec.safety_identifier}
        body.update((name, value) for name, value in extras.items() if value is not None)
        if self.caps.output_formats:
            body["output_format"] = spec.output_format
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
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(sim.now() + BEIJING_OFFSET_S))
    suffix = "".join(sim.random.choices(string.ascii_lowercase + string.digits, k=5))
    return f"cgt-{stamp}-{suffix}"


def create_task(sim: Simulator, body: dict[str, Any], base_url: str) -> VideoTask:
    """Validate a create body and enqueue the task; raises SimError with Ark's code on any problem."""
    target = sim.resolve_model(body.get("model"), "video")
    spec = read_create(sim, target, body)
    _check_limits(sim, target.model_id, target.video)
    now = sim.now()
    outcome, outcome_error = _draw_outcome(sim, spec.prompt)
    task = VideoTask(
        id=new_task_id(sim), model=target.model_id, model_key=target.entry.key, requested_model=body["model"],
        spec=spec, base_url=base_url, created_at=now, updated_at=now, outcome=outcome, outcome_error=outcome_error,
    )
    sim.tasks.tasks[task.id] = task
    return task


def _check_limits(sim: Simulator, model: str, caps: capabilities.VideoCapabilities) -> None:
    config = sim.config
    if sim.tasks.count("queued") >= config.video_max_queued:
        raise SimError(429, "QuotaExceeded", headers=sim.retry_after_header())  # too many queued tasks
    per_minute = config.video_requests_per_minute or caps.requests_per_minute
    if not sim.video_window.try_take(model, 1, per_minute, sim.now()):
        raise SimError(429, "ModelAccountRpmRateLimitExceeded", headers=sim.retry_after_header())


def _draw_outcome(sim: Simulator, prompt: str) -> tuple[str, dict[str, str] | None]:
    config = sim.config
    asked = sim.moderation_asked(prompt)
    if asked in OUTPUT_VIDEO_MODERATION_CODES:
        return "failed", error_item(asked)
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
        if running.get(model, 0) < (config.video_max_running or task.caps.concurrency):
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
        spec = task.spec
        note = "draft" if spec.draft else (f"from draft {spec.draft_task_id}" if spec.draft_task_id else "")
        look = Look(spec.prompt, task.model, audio=bool(spec.generate_audio), note=note)
        frames = spec.frame_count
        container = "mov" if spec.output_format == "mov" else "mp4"
        task.video_file = sim.media.add(container, width, height, at, frames=frames, look=look).filename
        if spec.return_last_frame:
            task.last_frame_file = sim.media.add("png", width, height, at, frames=frames, look=look,
                                                 still_of_frame=frames - 1).filename
        # w × h × frames / 1024, as Ark's documented usage examples count (docs/ark.md, "Frames and tokens")
        task.tokens = width * height * frames // 1024


def _purge(sim: Simulator, now: float) -> None:
    tasks = sim.tasks.tasks
    for task_id in [task.id for task in tasks.values()
                    if now - task.created_at > VIDEO_TASK_RETENTION_S
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
    service_tier = optional_enum(single, "filter.service_tier", SERVICE_TIERS) or "default"
    model = single.get("filter.model")
    task_ids = {value for name, value in params if name == "filter.task_ids"}
    window_start = sim.now() - VIDEO_TASK_RETENTION_S
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
