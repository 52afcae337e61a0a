"""The simulator's state: configuration, clock, stored results, video tasks, limits and counters."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from arksim.accounting import SlidingWindow, Stats
from arksim.clock import SimClock
from arksim.config import SimConfig
from arksim.errors import (
    INPUT_MODERATION_CODES,
    OUTPUT_IMAGE_MODERATION_CODES,
    OUTPUT_VIDEO_MODERATION_CODES,
    SimError,
    documented,
    invalid,
    missing,
    moderation,
    unsupported,
)
from arksim.media import MediaStore
from arksim.video import TaskBoard
from chalicelib.ark import capabilities
from chalicelib.ark.capabilities import Api, ArkModel


@dataclass(frozen=True)
class Target:
    """The model a request names: its row of the capability table and the id answers echo."""

    entry: ArkModel
    model_id: str

    @property
    def image(self) -> capabilities.ImageCapabilities:
        assert self.entry.image is not None
        return self.entry.image

    @property
    def video(self) -> capabilities.VideoCapabilities:
        assert self.entry.video is not None
        return self.entry.video


class Simulator:
    def __init__(self, config: SimConfig | None = None, clock: SimClock | None = None) -> None:
        self.config = config or SimConfig()
        self.clock = clock or SimClock()
        self.media = MediaStore()
        self.stats = Stats()
        self.tasks = TaskBoard()
        self.image_window = SlidingWindow()
        self.video_window = SlidingWindow()
        self.fault_random = random.Random(self.config.fault_seed)
        # Seeds, ids and colours: independent of the fault stream so faults replay with the same fault_seed.
        self.random = random.Random()

    def configure(self, changes: dict[str, Any]) -> SimConfig:
        self.config = self.config.updated(changes)
        if "fault_seed" in changes:
            self.fault_random = random.Random(self.config.fault_seed)
        return self.config

    def reset(self, everything: bool = False) -> None:
        """Clear counters and limit windows; with `everything`, also forget tasks and results."""
        self.stats.reset()
        self.image_window.clear()
        self.video_window.clear()
        if everything:
            self.tasks.clear()
            self.media.clear()

    def now(self) -> float:
        return self.clock.now()

    def retry_after_header(self) -> dict[str, str]:
        seconds = self.config.retry_after_s
        return {} if seconds is None else {"Retry-After": str(seconds)}

    def draw(self) -> float:
        return self.fault_random.random()

    def moderation_asked(self, prompt: str) -> str | None:
        """The moderation code a prompt's `moderation_marker` names (any code the marker may name)."""
        marker = self.config.moderation_marker
        at = prompt.find(marker)
        if at < 0:
            return None
        words = prompt[at + len(marker):].split(maxsplit=1)
        code = words[0] if words else ""
        known = INPUT_MODERATION_CODES + OUTPUT_IMAGE_MODERATION_CODES + OUTPUT_VIDEO_MODERATION_CODES
        return code if code in known else None

    def check_input_moderation(self, prompt: str) -> None:
        """Refuse a request whose prompt carries an input marker (Ark moderates inputs before any work)."""
        if self.config.input_sensitive_marker in prompt:
            raise moderation("InputTextSensitiveContentDetected")
        code = self.moderation_asked(prompt)
        if code in INPUT_MODERATION_CODES:
            raise moderation(code)

    def resolve_model(self, value: Any, api: Api) -> Target:
        """The model a `model` field (Model ID or configured Endpoint ID) refers to: any id the simulated
        provider has for a model of the capability table that it has not retired."""
        if value is None or value == "":
            raise missing("model")
        if not isinstance(value, str):
            raise invalid("model", "must be a string")
        model = self.config.endpoints.get(value, value)
        entry = capabilities.find(model)
        offered = entry.at(self.config.provider) if entry is not None else None
        if (entry is None or offered is None or model not in (offered.model_id, *offered.aliases)
                or offered.status == "retired"):
            raise SimError(404, "InvalidEndpointOrModel.NotFound", param="model", model=value)
        if model in self.config.inactive_models:
            raise SimError(404, "ModelNotOpen", param="model", model=model)
        if entry.api != api:
            raise invalid("model", f"{model} does not support this API")
        if model in self.config.free_trial_used_up_models:
            raise SimError(429, "QuotaExceeded", documented("QuotaExceeded", "free_trial", model=model),
                           headers=self.retry_after_header())
        return Target(entry, model)

    def refuse_unsupported(self, target: Target, body: dict[str, Any], fields: tuple[str, ...]) -> None:
        """400 naming the first of `fields` the body sets, unless the model is switched to ignoring them."""
        ignored = self.config.ignore_unsupported_fields
        if target.model_id in ignored or target.entry.key in ignored:
            return
        for name in fields:
            if body.get(name) is not None:
                raise unsupported(name, target.model_id)
