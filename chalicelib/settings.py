"""Runtime configuration, read from the environment once per process.

Everything that differs between a laptop and AWS is here; the code has no other local-only branches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

DEV_SIGNING_KEY = "arkflow-local-dev-signing-key-not-for-production"
DEFAULT_ARK_BASE_URL = "https://ark.cn-beijing.volces.com/api/v3"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _list(name: str, default: str = "") -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, default).split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    resource_prefix: str = field(default_factory=lambda: os.environ.get("ARKFLOW_PREFIX", "arkflow-dev"))
    region: str = field(default_factory=lambda: os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    token_signing_key: str = field(
        default_factory=lambda: os.environ.get("TOKEN_SIGNING_KEY", DEV_SIGNING_KEY)
    )
    token_ttl_s: int = field(default_factory=lambda: _int("TOKEN_TTL_SECONDS", 12 * 3600))
    # argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile). Tests lower them for speed.
    password_hash_time_cost: int = field(default_factory=lambda: _int("PASSWORD_HASH_TIME_COST", 3))
    password_hash_memory_kib: int = field(default_factory=lambda: _int("PASSWORD_HASH_MEMORY_KIB", 65536))
    login_max_failures: int = field(default_factory=lambda: _int("LOGIN_MAX_FAILURES", 5))
    login_lockout_s: int = field(default_factory=lambda: _int("LOGIN_LOCKOUT_SECONDS", 300))
    quota_timezone: str = field(default_factory=lambda: os.environ.get("QUOTA_TIMEZONE", "Asia/Shanghai"))
    cors_origins: tuple[str, ...] = field(default_factory=lambda: _list("CORS_ORIGINS"))
    max_body_bytes: int = field(default_factory=lambda: _int("MAX_BODY_BYTES", 6 * 1024 * 1024))
    internal_service_token: str = field(default_factory=lambda: os.environ.get("INTERNAL_SERVICE_TOKEN", ""))
    ark_base_url: str = field(default_factory=lambda: os.environ.get("ARK_BASE_URL", DEFAULT_ARK_BASE_URL))
    ark_api_key: str = field(default_factory=lambda: os.environ.get("ARK_API_KEY", ""))
    # Where result files may be copied from (`chalicelib.downloads`): Ark's object storage (TOS) in China and for
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
    ws_allowed_origins: tuple[str, ...] = field(default_factory=lambda: _list("WS_ALLOWED_ORIGINS"))
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
    # A message whose model has no free slot comes back after 1-2x this many seconds (SQS counts whole seconds).
    # It is the fallback: a released slot wakes the oldest deferred task (whose user is under its cap) at once.
    slot_wait_s: int = field(default_factory=lambda: _int("SLOT_WAIT_SECONDS", 3))
    # Retryable Ark errors: exponential backoff from the base, capped, with jitter.
    retry_base_s: int = field(default_factory=lambda: _int("RETRY_BASE_SECONDS", 2))
    retry_max_s: int = field(default_factory=lambda: _int("RETRY_MAX_SECONDS", 300))
    # Lane queue ARNs are built from it; on AWS the merge template points each event source at its queue.
    aws_account_id: str = field(default_factory=lambda: os.environ.get("AWS_ACCOUNT_ID", "123456789012"))

    def table_name(self, logical_name: str) -> str:
        return f"{self.resource_prefix}-{logical_name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reload_settings() -> Settings:
    """Re-read the environment (tests and the local stack change it between runs)."""
    get_settings.cache_clear()
    return get_settings()
