"""Ark's error answers: the envelope `{"error": {"code", "message", "param", "type"}}` and, for every code the
simulator answers with, Ark's documented message (docs/ark.md, "Errors"), so clients are tested against the texts
they will meet.
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    504: "InternalServerError",
}
# The account the simulator's messages name where Ark's name the caller's.
ACCOUNT_ID = "2100000000"

# Ark's documented messages by code; `{…}` fields are filled in per answer. Ark ends each with "Request ID: <id>".
MESSAGES = {
    "MissingParameter": "The request failed because it is missing one or multiple required parameters.",
    "InvalidParameter": "One or more parameters specified in the request are not valid.",
    # The form Ark uses when it names the parameter (observed with `size`, documented for `instructions`).
    "InvalidParameter.named": "The parameter `{param}` specified in the request are not valid: {reason}.",
    "InvalidImageURL.EmptyURL": "Empty base64 image url",
    "InvalidImageURL.InvalidFormat": "Invalid base64 image url",
    "InputTextSensitiveContentDetected": "The request failed because the input text may contain sensitive "
                                         "information.",
    "OutputImageSensitiveContentDetected": "The request failed because the output image may contain sensitive "
                                           "information.",
    "OutputVideoSensitiveContentDetected": "The request failed because the output video may contain sensitive "
                                           "information.",
    "AuthenticationError": "The API key or AK/SK in the request is missing or invalid.",
    "InvalidEndpointOrModel.NotFound": "The model or endpoint {model} does not exist or you do not have access "
                                       "to it.",
    "ModelNotOpen": "Your account {account} has not activated the model {model}. Please activate the model service "
                    "in the Ark Console.",
    "NotFound": "The specified {resource} {value} is not found.",
    "RateLimitExceeded.EndpointRPMExceeded": "The Requests Per Minute (RPM) limit of the associated endpoint for "
                                             "your account has been exceeded.",
    "RateLimitExceeded.EndpointTPMExceeded": "The Tokens Per Minute (TPM) limit of the associated endpoint for your "
                                             "account has been exceeded.",
    "ModelAccountRpmRateLimitExceeded": "RPM (Requests Per Minute) limit of the model is exceeded.",
    "ModelAccountTpmRateLimitExceeded": "TPM (Tokens Per Minute) limit of the model is exceeded.",
    "ModelAccountIpmRateLimitExceeded": "IPM (Images Per Minute) limit of the model is exceeded.",
    "APIAccountRpmRateLimitExceeded": "The RPM (Requests Per Minute) limit for the API on your account has been "
                                      "exceeded.",
    "AccountRateLimitExceeded": "Requests are too frequent. Please reduce your request frequency, wait a short "
                                "moment, and retry your request.",
    # Too many queued tasks: Ark's text does not say so.
    "QuotaExceeded": "The request has exceeded the quota.",
    "QuotaExceeded.free_trial": "Your account [{account}] has exhausted its free trial quota for the [{model}] "
                                "model.",
    "ServerOverloaded": "The service is currently unable to handle additional requests due to server overload. "
                        "Please retry later.",
    "SetLimitExceeded": "Your account [{account}] has reached the set inference limit for the [{model}] model, and "
                        "the model service has been paused. To continue using this model, please visit the Model "
                        "Activation page to adjust or close the \"Safe Experience Mode\".",
    "InflightBatchsizeExceeded": "The Inflight Batchsize limit has been exceeded.",
    "InternalServiceError": "The service encountered an unexpected internal error. Please retry later.",
}
# The 429 codes a request fault may answer with (`SimConfig.rate_limit_code`).
RATE_LIMIT_CODES = ("ModelAccountRpmRateLimitExceeded", "ModelAccountTpmRateLimitExceeded",
                    "ModelAccountIpmRateLimitExceeded", "RateLimitExceeded.EndpointRPMExceeded",
                    "RateLimitExceeded.EndpointTPMExceeded", "APIAccountRpmRateLimitExceeded",
                    "AccountRateLimitExceeded", "QuotaExceeded", "ServerOverloaded", "SetLimitExceeded",
                    "InflightBatchsizeExceeded")


def documented(code: str, variant: str | None = None, **fields: Any) -> str:
    """Ark's message for `code` (or one of its documented variants), with `fields` filled in."""
    return MESSAGES[f"{code}.{variant}" if variant else code].format(account=ACCOUNT_ID, **fields)


class SimError(Exception):
    """An Ark error answer; raising it anywhere in a handler produces Ark's body and status."""

    def __init__(self, status: int, code: str, message: str | None = None, param: str = "",
                 headers: dict[str, str] | None = None, **fields: Any) -> None:
        """`message` defaults to Ark's documented one for `code`, filled in with `fields`."""
        message = documented(code, **fields) if message is None else message
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": f"{self.message} Request ID: {request_id}",
                "param": self.param,
                "type": ERROR_TYPES.get(self.status, ""),
            }
        }


def invalid(param: str, reason: str, code: str = "InvalidParameter") -> SimError:
    """400 for a bad value, naming the parameter the way Ark's messages do."""
    return SimError(400, code, documented("InvalidParameter", "named", param=param, reason=reason), param)


def missing(param: str) -> SimError:
    return SimError(400, "MissingParameter", param=param)


def error_item(code: str) -> dict[str, str]:
    """`{code, message}` as Ark puts it in a per-image error or a failed video task."""
    return {"code": code, "message": documented(code)}
