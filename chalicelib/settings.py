"""Runtime configuration, read from the environment once per process; secrets at run time.

Everything that differs between a laptop and AWS is here; the code has no other local-only branches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from chalicelib import secret_store

DEV_SIGNING_KEY = "arkflow-local-dev-signing-key-not-for-production"
DEFAULT_ARK_BASE_URL = "https://ark.cn-beijing.volces.com/api/v3"
# Lambda takes at most 6 MiB per synchronous invocation, and API Gateway's proxy event carries the body as a JSON
# string beside the request's headers (twice: single- and multi-value) and context. 5 MiB leaves a 1 MiB margin,
# so a body the app refuses gets the app's 413 rather than API Gateway's 502 for an oversized event.
LAMBDA_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
# The least a video whose callbacks arrive is polled at: a lost terminal callback ends it at most this late.
CALLBACKS_ARRIVING_MIN_POLL_INTERVAL_S = 60.0


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _list(name: str, default: str = "") -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, default).split(",") if part.strip())


class SecretSetting:
    """A setting read per use: a value given to `Settings(...)`, else its environment variable when set (the
    laptop, the tests), else the key of the same name in the stage's Secrets Manager secret (`ARKFLOW_SECRET_ID`,
    on AWS) through the container's short-lived copy (`chalicelib.secret_store`), so a rotation needs no deploy.

    A dataclass field whose default is this descriptor: `Settings(ark_api_key="...")` still sets an explicit value.
    """

    def __init__(self, env_name: str, default: str = "", required: bool = True) -> None:
        self.env_name = env_name
        self.default = default
        self.required = required
        self._slot = f"_{env_name.lower()}"

    def __get__(self, settings: Any, owner: type | None = None) -> Any:
        if settings is None:
            return self  # the dataclass default: "not given"
        value: str = settings.__dict__[self._slot] or os.environ.get(self.env_name, "")
        if value:
            return value
        if settings.secret_id:
            return secret_store.store(settings.secret_id).get(self.env_name, required=self.required)
        return self.default

    def __set__(self, settings: Any, value: Any) -> None:
        settings.__dict__[self._slot] = "" if value is self else value


def _secret(env_name: str, default: str = "", required: bool = True) -> Any:
    # Never shown or compared: repr() or == would read the secret.
    return field(default=SecretSetting(env_name, default, required), repr=False, compare=False)


@dataclass(frozen=True)
class Settings:
    resource_prefix: str = field(default_factory=lambda: os.environ.get("ARKFLOW_PREFIX", "arkflow-dev"))
    region: str = field(default_factory=lambda: os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    # The Secrets Manager secret the secret settings below come from when their variables are unset (AWS).
    secret_id: str = field(default_factory=lambda: os.environ.get("ARKFLOW_SECRET_ID", ""))
    token_signing_key: str = _secret("TOKEN_SIGNING_KEY", default=DEV_SIGNING_KEY)
    token_ttl_s: int = field(default_factory=lambda: _int("TOKEN_TTL_SECONDS", 12 * 3600))
    # argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile). Tests lower them for speed.
    password_hash_time_cost: int = field(default_factory=lambda: _int("PASSWORD_HASH_TIME_COST", 3))
    password_hash_memory_kib: int = field(default_factory=lambda: _int("PASSWORD_HASH_MEMORY_KIB", 65536))
    # Login attempts per window of LOGIN_LOCKOUT_SECONDS: per (username, source address), and per username from
    # all sources together (looser, so guesses from elsewhere hardly lock the owner out); see auth.LoginThrottle.
    login_max_failures: int = field(default_factory=lambda: _int("LOGIN_MAX_FAILURES", 5))
    login_max_failures_per_user: int = field(default_factory=lambda: _int("LOGIN_MAX_FAILURES_PER_USER", 50))
    login_lockout_s: int = field(default_factory=lambda: _int("LOGIN_LOCKOUT_SECONDS", 300))
    quota_timezone: str = field(default_factory=lambda: os.environ.get("QUOTA_TIMEZONE", "Asia/Shanghai"))
    cors_origins: tuple[str, ...] = field(default_factory=lambda: _list("CORS_ORIGINS"))
    max_body_bytes: int = field(default_factory=lambda: _int("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
    internal_service_token: str = _secret("INTERNAL_SERVICE_TOKEN", required=False)
    ark_base_url: str = field(default_factory=lambda: os.environ.get("ARK_BASE_URL", DEFAULT_ARK_BASE_URL))
    ark_api_key: str = _secret("ARK_API_KEY")
    # The first administrator's password (its name is ADMIN_USERNAME), used once per deployment
    # (`chalicelib.accounts.first_admin`).
    admin_password: str = _secret("ADMIN_PASSWORD", required=False)
    # Where result files may be copied from (`chalicelib.media.downloads`): Ark's object storage (TOS) in China and for
    # BytePlus; the local stack adds its simulator's origin.
    ark_result_hosts: tuple[str, ...] = field(
        default_factory=lambda: _list("ARK_RESULT_HOSTS", "*.volces.com,*.bytepluses.com")
    )
    # Public base URL of the REST API, used to build Ark's callback_url.
    public_api_url: str = field(default_factory=lambda: os.environ.get("PUBLIC_API_URL", ""))
    websocket_management_url: str = field(
        default_factory=lambda: os.environ.get("WEBSOCKET_MANAGEMENT_URL", "")
    )
    websocket_public_url: str = field(default_factory=lambda: os.environ.get("WEBSOCKET_PUBLIC_URL", ""))
    # Origins that may open the WebSocket: unset or empty means the web app's (`CORS_ORIGINS`); `*` allows any.
    ws_allowed_origins: tuple[str, ...] = field(
        default_factory=lambda: _list("WS_ALLOWED_ORIGINS") or _list("CORS_ORIGINS")
    )
    media_bucket: str = field(default_factory=lambda: os.environ.get("RESULTS_BUCKET", ""))
    # A Secrets Manager secret holding `{"access_key_id", "secret_access_key"}` of an IAM user that may only read
    # task inputs: it signs the input URLs Ark fetches later (docs/storage.md).
    ark_inputs_signing_secret: str = field(default_factory=lambda: os.environ.get("ARK_INPUTS_SIGNING_SECRET", ""))
    task_deadline_s: int = field(default_factory=lambda: _int("TASK_DEADLINE_SECONDS", 3 * 3600))
    video_poll_interval_s: float = field(default_factory=lambda: _float("VIDEO_POLL_INTERVAL_SECONDS", 10.0))
    # Long videos are polled less often: the interval doubles up to this cap (callbacks still come at once).
    video_poll_max_interval_s: float = field(
        default_factory=lambda: _float("VIDEO_POLL_MAX_INTERVAL_SECONDS", 120.0)
    )
    # Once a video's callbacks prove they arrive (its running callback was applied), the poller is only a safety
    # net: it polls it this often, which bounds how late a lost terminal callback ends the video. Unset: 4 times
    # the poll interval, and at least a minute (`poll_interval_with_callbacks_s`).
    video_poll_with_callbacks_override_s: float | None = field(
        default_factory=lambda: _float("VIDEO_POLL_INTERVAL_WITH_CALLBACKS_SECONDS", 0.0) or None
    )
    # A task with no free slot is parked (a released slot hands itself over); a message that kept losing its park
    # to slots freeing under it comes back after 1-2x this many seconds (SQS counts whole seconds).
    slot_wait_s: int = field(default_factory=lambda: _int("SLOT_WAIT_SECONDS", 3))
    # Retryable Ark errors: exponential backoff from the base, capped, with jitter.
    retry_base_s: int = field(default_factory=lambda: _int("RETRY_BASE_SECONDS", 2))
    retry_max_s: int = field(default_factory=lambda: _int("RETRY_MAX_SECONDS", 300))
    # A model's circuit opens after this many Ark 429s/5xx/timeouts within the window; a probe call may go out
    # after the cool-down; tasks waiting on a circuit open longer than the maximum fail `upstream_unavailable`.
    circuit_threshold: int = field(default_factory=lambda: _int("CIRCUIT_THRESHOLD", 5))
    circuit_window_s: int = field(default_factory=lambda: _int("CIRCUIT_WINDOW_SECONDS", 60))
    circuit_cooldown_s: int = field(default_factory=lambda: _int("CIRCUIT_COOLDOWN_SECONDS", 60))
    circuit_max_open_s: int = field(default_factory=lambda: _int("CIRCUIT_MAX_OPEN_SECONDS", 30 * 60))
    # Webhooks may go to `http(s)://127.0.0.1|[::1]|localhost:<port>`: the local stack's and the tests' receivers.
    # Off in every deployed stage (nothing there sets it), where a webhook only reaches public addresses.
    webhook_allow_loopback: bool = field(default_factory=lambda: _flag("WEBHOOK_ALLOW_LOOPBACK"))
    # Log lines as JSON (CloudWatch Logs Insights reads their fields) or as readable text (a terminal, the tests):
    # `LOG_FORMAT=json|plain`, JSON by default inside Lambda (`chalicelib.observability`).
    log_json: bool = field(default_factory=lambda: os.environ.get(
        "LOG_FORMAT", "json" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "plain").strip().lower() == "json")
    # X-Ray through Powertools' Tracer: on where the stage traces (`infra.template` sets `POWERTOOLS_TRACE_DISABLED`
    # to `false` there), off everywhere else, where even the X-Ray SDK is not imported.
    tracing: bool = field(default_factory=lambda: os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower()
                          == "false")
    # Per-model CloudWatch metrics in the embedded metric format, printed at the end of each invocation: on by
    # default inside Lambda, off elsewhere (nothing reads them there) unless `EMF_METRICS` is set.
    emf_metrics: bool = field(default_factory=lambda: _flag("EMF_METRICS") if os.environ.get("EMF_METRICS")
                              else bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")))
    # Lane queue ARNs are built from it; on AWS the merge template points each event source at its queue.
    aws_account_id: str = field(default_factory=lambda: os.environ.get("AWS_ACCOUNT_ID", "123456789012"))

    @property
    def poll_interval_with_callbacks_s(self) -> float:
        if self.video_poll_with_callbacks_override_s is not None:
            return self.video_poll_with_callbacks_override_s
        return max(4 * self.video_poll_interval_s, CALLBACKS_ARRIVING_MIN_POLL_INTERVAL_S)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reload_settings() -> Settings:
    """Re-read the environment (tests and the local stack change it between runs)."""
    get_settings.cache_clear()
    return get_settings()
