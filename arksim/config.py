"""Simulator settings: read from `ARKSIM_*` variables at start, changeable at run time through `/_sim/config`."""

from __future__ import annotations

import json
import os
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from arksim.errors import RATE_LIMIT_CODES
from chalicelib.ark import capabilities

Fraction = Field(default=0.0, ge=0.0, le=1.0)
Endpoint = Literal["images.generate", "tasks.create", "tasks.get", "tasks.list", "tasks.delete"]
# How a malformed answer is spoilt: top-level scalars null (`created: null`), lists of strings (`data: ["x"]`),
# objects as lists (`usage: [1]`), `error: "boom"`, or a body that is not JSON.
MalformedKind = Literal["null_values", "scalar_items", "list_objects", "string_error", "not_json"]
RateLimitCode = Literal[RATE_LIMIT_CODES]  # type: ignore[valid-type]


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Empty: any non-empty Bearer key is accepted.
    api_key: str = ""

    # --- timing (seconds) ---
    image_latency_s: float = Field(default=0.5, ge=0)
    video_queue_s: float = Field(default=1.0, ge=0)  # minimum time a task spends `queued`
    video_run_s: float = Field(default=5.0, ge=0)  # time from `running` to its outcome (Ark: ~60-120 s)
    result_ttl_s: float = Field(default=capabilities.RESULT_URL_TTL_S, gt=0)

    # --- account limits: unset (null), each model's own from the capability table ---
    images_per_minute: int | None = Field(default=None, ge=1)
    image_max_in_flight: int = Field(default=0, ge=0)  # 0 = no limit; else 429 InflightBatchsizeExceeded
    video_requests_per_minute: int | None = Field(default=None, ge=1)
    video_max_running: int | None = Field(default=None, ge=1)
    video_max_queued: int = Field(default=capabilities.VIDEO_MAX_QUEUED_PER_ACCOUNT, ge=0)

    # --- models ---
    # Whose ids the simulator answers to, and whose lifecycle it follows (a retired model is not found).
    provider: capabilities.Provider = "volcengine"
    endpoints: dict[str, str] = Field(default_factory=dict)  # "ep-..." endpoint id -> model id
    inactive_models: list[str] = Field(default_factory=list)  # answered with 404 ModelNotOpen
    # Generation calls answered 429 QuotaExceeded with Ark's "free trial quota exhausted" text.
    free_trial_used_up_models: list[str] = Field(default_factory=list)
    max_input_image_bytes: int | None = Field(default=None, ge=1)  # unset: each model's own
    # Models (ids) whose requests may carry fields they do not support: dropped instead of refused with 400
    # InvalidParameter.UnsupportedParameter (Ark does not document which it does per model and field).
    ignore_unsupported_fields: list[str] = Field(default_factory=list)

    # --- fault injection: each request (on `fault_endpoints`) draws once ---
    fault_seed: int | None = None
    fault_endpoints: list[Endpoint] = Field(default_factory=lambda: ["images.generate", "tasks.create"])
    rate_limit_fraction: float = Fraction
    rate_limit_code: RateLimitCode | Literal[""] = ""  # empty: the endpoint's own RPM/IPM code
    retry_after_s: int | None = Field(default=None, ge=0)  # sent as Retry-After on every 429 when set
    server_error_fraction: float = Fraction
    timeout_fraction: float = Fraction
    timeout_hang_s: float = Field(default=120.0, ge=0)  # how long a "timed out" request hangs before a 504
    slow_fraction: float = Fraction
    slow_extra_s: float = Field(default=5.0, ge=0)
    # A 200 that does not fit Ark's documented shape, sent after the work was done (an image made, a task created).
    malformed_answer_fraction: float = Fraction
    malformed_answer_kinds: list[MalformedKind] = Field(default_factory=lambda: list(get_args(MalformedKind)),
                                                        min_length=1)
    # A streamed image request breaks off after its first image with a request-level SSE `error` event.
    stream_error_fraction: float = Fraction
    # Sent as `x-should-retry` on every error answer when set (the official SDK obeys it over its own rules).
    should_retry_header: Literal["", "true", "false"] = ""
    # Prompt markers: input moderation at request time; output moderation on the result.
    input_sensitive_marker: str = "SIM_SENSITIVE_INPUT"
    output_sensitive_marker: str = "SIM_SENSITIVE_OUTPUT"
    # `<marker><code>` in a prompt answers with that moderation code (arksim/errors.py lists them: input and
    # output image/video variants, ContentSecurityDetectionError), e.g. "SIM_MODERATION:InputImageSensitive...".
    moderation_marker: str = Field(default="SIM_MODERATION:", min_length=1)
    output_sensitive_fraction: float = Fraction  # per generated image / per video task
    image_internal_error_fraction: float = Fraction  # per image: stops the rest of a group
    video_fail_fraction: float = Fraction  # task ends `failed` with InternalServiceError
    video_expire_fraction: float = Fraction  # task ends `expired` instead of succeeding

    # --- callbacks (Ark: 5 s acknowledgement, 3 retries for succeeded/failed) ---
    callback_timeout_s: float = Field(default=5.0, gt=0)
    callback_retries: int = Field(default=3, ge=0)
    callback_retry_delay_s: float = Field(default=1.0, ge=0)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> SimConfig:
        """Fields from `ARKSIM_<FIELD>` (lists and dicts as JSON), then `overrides`."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            raw = environ.get(f"ARKSIM_{name.upper()}")
            if raw is None:
                continue
            collection = info.annotation is not None and str(info.annotation).startswith(("list", "dict"))
            values[name] = json.loads(raw) if collection else raw
        return cls.model_validate({**values, **overrides})

    def updated(self, changes: dict[str, Any]) -> SimConfig:
        """A validated copy with `changes` applied (unknown fields and bad values raise ValidationError)."""
        return SimConfig.model_validate({**self.model_dump(), **changes})
