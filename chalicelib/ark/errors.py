"""Typed errors for calls to Volcengine Ark (codes and their meaning: shared ark-api.md section 4).

Every error carries Ark's `code` and `message` (what a task's `error` records) and says what to do about it:
an `ArkRetryableError` may succeed later (after `retry_after` seconds when Ark said so); an `ArkPermanentError`
will fail again with the same input or account. None of them ever contains the API key.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any


class ArkError(Exception):
    action = "see Ark's error code"

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        status = f"HTTP {http_status} " if http_status is not None else ""
        super().__init__(f"Ark {status}{code}: {message} ({self.action})")

    def as_task_error(self) -> dict[str, str]:
        """The `{code, message}` pair a task records as its `error`."""
        return {"code": self.code, "message": self.message}


class ArkRetryableError(ArkError):
    action = "retry later with backoff"

    def __init__(self, code: str, message: str, http_status: int | None = None,
                 retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(code, message, http_status)


class ArkRateLimitError(ArkRetryableError):
    action = "Ark's rate or concurrency limit was hit: retry after Retry-After or with backoff, lower concurrency"


class ArkServerError(ArkRetryableError):
    action = "Ark failed internally or is unavailable: retry with backoff"


class ArkTransportError(ArkRetryableError):
    action = "no usable answer from Ark (timeout or connection failure): retry with backoff"


class ArkPermanentError(ArkError):
    action = "do not retry with the same input"


class ArkInvalidRequestError(ArkPermanentError):
    action = "the request is invalid for this model: fix the parameters named in the message"


class ArkSensitiveContentError(ArkPermanentError):
    action = "content moderation rejected the input or the output: change the prompt or images"


class ArkAuthError(ArkPermanentError):
    action = "the API key or account is not allowed to call Ark: check ARK_API_KEY and the account in the console"


class ArkQuotaExhaustedError(ArkPermanentError):
    action = "the account's quota or spend limit at Ark is used up: raise it in the console"


class ArkNotFoundError(ArkPermanentError):
    action = "the model, endpoint or task does not exist at Ark (or no longer does)"


_SENSITIVE_MARKERS = ("SensitiveContentDetected", "RiskDetection")
# 429 codes that no amount of waiting fixes.
_EXHAUSTED_429_CODES = ("SetLimitExceeded",)
# QuotaExceeded means "too many queued tasks" (retry later) or "free trial used up" (permanent) [ark-api.md 4.2].
_QUEUE_FULL_HINTS = ("queue", "queued", "pending", "inflight", "in-flight", "concurren")
# 400 codes that mean "try again later" rather than "fix the request".
_RETRYABLE_400_CODES = ("InvalidEndpoint.ClosedEndpoint", "ContentSecurityDetectionError")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(http_status: int, body: Any, retry_after: float | None = None) -> ArkError:
    """The typed error for a non-2xx Ark answer (or a 200 that carries only a top-level `error`)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or f"HTTP{http_status}")
        message = str(error.get("message") or "")
    else:
        code, message = f"HTTP{http_status}", "Ark answered without an error body"
    return classify_error(code, message, http_status, retry_after)


def classify_error(code: str, message: str, http_status: int, retry_after: float | None = None) -> ArkError:
    if any(marker in code for marker in _SENSITIVE_MARKERS):
        return ArkSensitiveContentError(code, message, http_status)
    if http_status == 429:
        if code in _EXHAUSTED_429_CODES:
            return ArkQuotaExhaustedError(code, message, http_status)
        if code == "QuotaExceeded" and not any(hint in message.lower() for hint in _QUEUE_FULL_HINTS):
            return ArkQuotaExhaustedError(code, message, http_status)
        return ArkRateLimitError(code, message, http_status, retry_after)
    if http_status >= 500 or http_status in (408, 409):
        return ArkServerError(code, message, http_status, retry_after)
    if code in _RETRYABLE_400_CODES:
        return ArkServerError(code, message, http_status, retry_after)
    if http_status == 401:
        return ArkAuthError(code, message, http_status)
    if http_status == 403:
        if "Overdue" in code:
            return ArkQuotaExhaustedError(code, message, http_status)
        return ArkAuthError(code, message, http_status)
    if http_status == 404:
        return ArkNotFoundError(code, message, http_status)
    return ArkInvalidRequestError(code, message, http_status)
