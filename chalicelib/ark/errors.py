"""Typed errors for calls to Volcengine Ark, and what a task stores and shows of them (docs/ark.md, "Errors").

Every error carries Ark's `code` and `message` and says what to do about it: an `ArkRetryableError` may succeed
later (after `retry_after` seconds when Ark said so); an `ArkPermanentError` will fail again with the same input or
account; an `ArkInvalidResponseError` is an answer that does not fit Ark's documented shape, so the call may have
taken effect (and been billed) and is neither repeated blindly nor taken as refused. None of them ever contains
the API key.

Ark's error text is capped where it is parsed (`ArkErrorBody`), so no answer can make a task's write exceed
DynamoDB's 400 KB item limit. Users never read it: it names internal ids (endpoints, upstream models). A task
stores, with Ark's code, a message of arkflow's own for its user (`USER_MESSAGES`) and Ark's text as
`upstream_message`, which only admins see.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

# A few KB of Ark's text is plenty to diagnose; the marker says how much was cut.
MAX_TEXT_BYTES = 2048
MAX_CODE_BYTES = 128
_CUT_MARKER = " [… {} more bytes cut]"
_MARKER_ROOM = 40


def capped(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else its start and a marker saying how much was cut (together
    within `limit`)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    kept = raw[: limit - _MARKER_ROOM].decode(errors="ignore")
    return kept + _CUT_MARKER.format(len(raw) - len(kept.encode()))


class ArkErrorBody(BaseModel):
    """Ark's `{code, message, param, type}`, in error answers, per-image errors and failed video tasks."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    code: Annotated[str, AfterValidator(lambda code: capped(code, MAX_CODE_BYTES))]
    message: Annotated[str, AfterValidator(capped)] = ""


class ArkErrorAnswer(BaseModel):
    """The envelope of a non-2xx answer."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    error: ArkErrorBody


class ArkError(Exception):
    action = "see Ark's error code"

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        status = f"HTTP {http_status} " if http_status is not None else ""
        super().__init__(f"Ark {status}{code}: {message} ({self.action})")


class ArkRetryableError(ArkError):
    action = "retry later with backoff"

    def __init__(self, code: str, message: str, http_status: int | None = None,
                 retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(code, message, http_status)


class ArkRateLimitError(ArkRetryableError):
    action = "Ark refused the call before doing any work (a rate, queue or concurrency limit): retry after " \
             "Retry-After or with backoff, lower concurrency"


class ArkServerError(ArkRetryableError):
    action = "Ark failed internally or is unavailable: retry with backoff"


class ArkTransportError(ArkRetryableError):
    action = "no answer from Ark in time (timeout or connection failure): retry with backoff"


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


class ArkInvalidResponseError(ArkError):
    action = "Ark answered, but not in its documented shape: the call may have taken effect (and been billed), " \
             "so do not repeat it blindly"

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(INVALID_RESPONSE, message, http_status)


INVALID_RESPONSE = "invalid_response"
# Errors that leave a call's outcome unknown: a read is made again later, a create is reconciled through Ark's list
# (never sent again blindly).
NO_USABLE_ANSWER = (ArkRetryableError, ArkInvalidResponseError)
# A call Ark did not answer (a timeout, a connection failure) counts as the 504 a gateway would have answered: with
# Ark's 5xx, for the circuit and the `ark_5xx` figure (docs/api.md, "Metrics").
UNANSWERED_STATUS = 504


def counted_status(error: ArkError) -> int | None:
    """The HTTP status an Ark error counts as in the figures: its own, or `UNANSWERED_STATUS` for no answer."""
    if error.http_status is None and isinstance(error, ArkTransportError):
        return UNANSWERED_STATUS
    return error.http_status

_SENSITIVE_MARKERS = ("SensitiveContentDetected", "RiskDetection")
# 429 codes that no amount of waiting fixes.
_EXHAUSTED_429_CODES = ("SetLimitExceeded",)
# Of Ark's documented texts for 429 `QuotaExceeded`, only this one says the quota is gone for good; "The request
# has exceeded the quota." means too many queued tasks, and a plan's window resets. Any other text cannot be told
# apart, so it is retried: a 429 bills nothing, and the retries end after the lane's receive budget.
_FREE_TRIAL_USED_UP = re.compile(r"has exhausted its free trial quota", re.IGNORECASE)
# 400 codes that mean "try again later" rather than "fix the request".
_RETRYABLE_400_CODES = ("InvalidEndpoint.ClosedEndpoint", "ContentSecurityDetectionError")


MODEL_UNAVAILABLE = "model_unavailable"


def is_model_unavailable(error: ArkError) -> bool:
    """Ark's 404 for a model or endpoint this account cannot call (not activated, unknown, closed to model ids):
    refused before any work, and every task of the model will meet it until an admin acts."""
    return error.http_status == 404 and (error.code == "ModelNotOpen"
                                         or error.code.startswith("InvalidEndpointOrModel"))


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


def error_from_response(http_status: int, body: bytes, retry_after: float | None = None) -> ArkError:
    """The typed error for a non-2xx Ark answer (its envelope, or just its status when the body is unreadable)."""
    try:
        error = ArkErrorAnswer.model_validate_json(body).error
    except ValidationError:
        return classify_error(f"HTTP{http_status}", f"Ark answered HTTP {http_status} without a readable error body",
                              http_status, retry_after)
    return classify_error(error.code, error.message, http_status, retry_after)


def classify_error(code: str, message: str, http_status: int, retry_after: float | None = None) -> ArkError:
    if any(marker in code for marker in _SENSITIVE_MARKERS):
        return ArkSensitiveContentError(code, message, http_status)
    if http_status == 429:
        if code in _EXHAUSTED_429_CODES or (code == "QuotaExceeded" and _FREE_TRIAL_USED_UP.search(message)):
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


# --- what a task's user reads -----------------------------------------------------------------------------------

_MODERATED_PROMPT = "Content moderation found the prompt may contain sensitive content; change it and try again."
_MODERATED_IMAGE = "Content moderation found a reference image may contain sensitive content; use another image."
_MODERATED_OUTPUT = "Content moderation withheld the result as possibly sensitive; try another prompt."
_BUSY = "The model's provider is busy; try again later."
_ACCOUNT_REFUSED = ("The model is not available right now: its provider refused arkflow's account. An administrator "
                    "needs to check the model's configuration.")
_LIMIT_USED_UP = "The model's usage limit at its provider is used up; an administrator needs to raise it."
_MODEL_UNAVAILABLE = ("The model is not available at its provider; an administrator needs to check the model's "
                      "configuration.")
UPSTREAM_UNAVAILABLE = "upstream_unavailable"
UPSTREAM_QUOTA_EXCEEDED = "upstream_quota_exceeded"

# By Ark's code (or the code's family, before its first "."), then by arkflow's own codes for what happened at Ark.
USER_MESSAGES: dict[str, str] = {
    "MissingParameter": "The model rejected the request: a required parameter is missing.",
    "InvalidParameter": "The model rejected the request's parameters; check them against the model's limits.",
    "InvalidImageURL": "A reference image could not be read by the model (empty, undecodable or an unsupported "
                       "format).",
    "InvalidEndpoint": "The model is temporarily unavailable; try again later.",
    "SensitiveContentDetected": _MODERATED_PROMPT,
    "InputTextSensitiveContentDetected": _MODERATED_PROMPT,
    "InputTextRiskDetection": _MODERATED_PROMPT,
    "InputImageSensitiveContentDetected": _MODERATED_IMAGE,
    "InputImageSensitiveContentDetected.PrivacyInformation": "A reference image appears to show a real person, "
                                                             "which the model does not accept.",
    "InputImageSensitiveContentDetected.PolicyViolation": "A reference image may infringe copyright; use another "
                                                          "image.",
    "InputImageRiskDetection": _MODERATED_IMAGE,
    "OutputImageSensitiveContentDetected": "Content moderation withheld the generated image as possibly sensitive; "
                                           "try another prompt.",
    "OutputVideoSensitiveContentDetected": "Content moderation withheld the generated video as possibly sensitive; "
                                           "try another prompt.",
    "OutputVideoSensitiveContentDetected.PolicyViolation": "The generated video may infringe copyright and was "
                                                           "withheld; try another prompt.",
    "ContentSecurityDetectionError": "The content safety check failed; try again later.",
    "AuthenticationError": _ACCOUNT_REFUSED,
    "InvalidAccountStatus": _ACCOUNT_REFUSED,
    "AccessDenied": _ACCOUNT_REFUSED,
    "OperationDenied": _ACCOUNT_REFUSED,
    "AccountOverdueError": _LIMIT_USED_UP,
    "OperationDenied.ServiceOverdue": _LIMIT_USED_UP,
    "SetLimitExceeded": _LIMIT_USED_UP,
    "QuotaExceeded": "The model's provider refused the request: its account has too many queued tasks, or its "
                     "quota is used up. Try again later.",
    "InvalidEndpointOrModel": _MODEL_UNAVAILABLE,
    "ModelNotOpen": _MODEL_UNAVAILABLE,
    "NotFound": _MODEL_UNAVAILABLE,
    "ModelAccountIpmRateLimitExceeded": _BUSY,
    "ModelAccountRpmRateLimitExceeded": _BUSY,
    "ModelAccountTpmRateLimitExceeded": _BUSY,
    "RateLimitExceeded": _BUSY,
    "APIAccountRpmRateLimitExceeded": _BUSY,
    "AccountRateLimitExceeded": _BUSY,
    "ServerOverloaded": _BUSY,
    "RequestBurstTooFast": _BUSY,
    "InflightBatchsizeExceeded": _BUSY,
    "InternalServiceError": "The model's provider failed internally; try again.",
    INVALID_RESPONSE: "The model's provider sent an answer arkflow could not read. The task was stopped rather "
                      "than sent again, since the first attempt may have been billed.",
    UPSTREAM_UNAVAILABLE: "The model's provider stayed unavailable; try again later.",
    UPSTREAM_QUOTA_EXCEEDED: "The model's provider kept refusing the request: its account has too many queued "
                             "tasks, or its quota is used up. Try again later, or ask an administrator.",
    "upstream_lost": "The model's provider no longer knows this video task.",
    MODEL_UNAVAILABLE: _MODEL_UNAVAILABLE,
    "upstream_failed": "The model's provider reported that the task failed.",
}
_DEFAULT_USER_MESSAGE = "The model's provider could not complete this task."


def user_message(code: str) -> str:
    """arkflow's own message for one of Ark's codes (or of its own codes for what happened at Ark)."""
    found = USER_MESSAGES.get(code) or USER_MESSAGES.get(code.split(".", 1)[0])
    if found:
        return found
    if any(marker in code for marker in _SENSITIVE_MARKERS):
        return _MODERATED_OUTPUT if code.startswith("Output") else _MODERATED_PROMPT
    return _DEFAULT_USER_MESSAGE


def task_error(code: str, upstream_message: str = "", message: str | None = None) -> dict[str, str]:
    """A task's `error` for a failure at Ark: the code, a `message` for its user (ours: by default the one for the
    code), and what Ark said (`upstream_message`, admins only)."""
    error = {"code": code, "message": message or user_message(code)}
    if upstream_message:
        error["upstream_message"] = upstream_message
    return error


def gave_up_error(error: ArkError, attempts: int) -> dict[str, str]:
    """A task's `error` when Ark kept answering `error` (retryable) until the lane's receive budget ran out."""
    code = UPSTREAM_QUOTA_EXCEEDED if error.code == "QuotaExceeded" else UPSTREAM_UNAVAILABLE
    message = f"{user_message(code)} Its last answer, after {attempts} attempts: {error.code}."
    return task_error(code, f"Ark kept failing after {attempts} attempts ({error.code}: {error.message})", message)


def error_shown(error: dict[str, Any] | None, *, to_admin: bool) -> dict[str, Any] | None:
    """A stored task or image error as the API shows it: Ark's own text (`upstream_message`) to admins only."""
    if error is None or to_admin:
        return error
    return {key: value for key, value in error.items() if key != "upstream_message"}
