"""The simulator's state: configuration, clock, stored results, video tasks, limits and counters."""

from __future__ import annotations

import random
from typing import Any, Literal

from arksim.accounting import SlidingWindow, Stats
from arksim.clock import SimClock
from arksim.config import SimConfig
from arksim.errors import SimError, documented, invalid, missing
from arksim.media import MediaStore
from arksim.video import TaskBoard
from chalicelib.ark.model_ids import IMAGE_MODELS, VIDEO_MODELS

Api = Literal["images", "video"]
MODELS_BY_API: dict[Api, tuple[str, ...]] = {"images": IMAGE_MODELS, "video": VIDEO_MODELS}


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

    def resolve_model(self, value: Any, api: Api) -> str:
        """The `<name>-<version>` model a `model` field (Model ID or configured Endpoint ID) refers to."""
        if value is None or value == "":
            raise missing("model")
        if not isinstance(value, str):
            raise invalid("model", "must be a string")
        model = self.config.endpoints.get(value, value)
        known = IMAGE_MODELS + VIDEO_MODELS
        if model not in known:
            raise SimError(404, "InvalidEndpointOrModel.NotFound", param="model", model=value)
        if model in self.config.inactive_models:
            raise SimError(404, "ModelNotOpen", param="model", model=model)
        if model not in MODELS_BY_API[api]:
            raise invalid("model", f"{model} does not support this API")
        if model in self.config.free_trial_used_up_models:
            raise SimError(429, "QuotaExceeded", documented("QuotaExceeded", "free_trial", model=model),
                           headers=self.retry_after_header())
        return model
