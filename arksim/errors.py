"""Ark's error answers: the envelope `{"error": {"code", "message", "param", "type"}}` and, for every code the
simulator answers with, Ark's documented message (docs/ark.md, "Errors"), so clients are tested against the texts
they will meet.
"""

from __future__ import annotations

import uuid
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
    "InvalidParameter.UnsupportedParameter": "The parameter `{param}` specified in the request are not valid: "
                                             "the parameter is not available on this endpoint ({model}).",
    "InputTextSensitiveContentDetected": "The request failed because the input text may contain sensitive "
                                         "information.",
    "InputImageSensitiveContentDetected": "The request failed because the input image may contain sensitive "
                                          "information.",
    "InputImageSensitiveContentDetected.PrivacyInformation": "The request failed because the input image may "
                                                             "contain real person.",
    "InputImageSensitiveContentDetected.PolicyViolation": "The request failed because the input image may be "
                                                          "related to copyright restrictions.",
    "InputVideoSensitiveContentDetected": "The request failed because the input video may contain sensitive "
                                          "information.",
    "InputVideoSensitiveContentDetected.PrivacyInformation": "The request failed because the input video may "
                                                             "contain real person.",
    "InputVideoSensitiveContentDetected.PolicyViolation": "The request failed because the input video may be "
                                                          "related to copyright restrictions.",
    "OutputImageSensitiveContentDetected": "The request failed because the output image may contain sensitive "
                                           "information.",
    "OutputImageSensitiveContentDetected.DeepFake": "The request failed because the output image may contain "
                                                    "counterfeit documents or credentials.",
    "OutputVideoSensitiveContentDetected": "The request failed because the output video may contain sensitive "
                                           "information.",
    "OutputVideoSensitiveContentDetected.PolicyViolation": "The request failed because the output video may be "
                                                           "related to copyright restrictions.",
    # The moderation service itself failed: Ark puts its own request id inside the text, then the service's.
    "ContentSecurityDetectionError": "Internal error. ARK Request ID: {request_id}; CSD RequestId: {csd_id}; "
                                     "CSD code: 50000; CSD message: internal error",
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
# Moderation answers a prompt marker may ask for (`SimConfig.moderation_marker`): input ones refuse the request,
# output ones fail an image of a group or a video task. Dotted codes are Ark's documented variants.
INPUT_MODERATION_CODES = ("InputTextSensitiveContentDetected", "InputImageSensitiveContentDetected",
                          "InputImageSensitiveContentDetected.PrivacyInformation",
                          "InputImageSensitiveContentDetected.PolicyViolation", "InputVideoSensitiveContentDetected",
                          "InputVideoSensitiveContentDetected.PrivacyInformation",
                          "InputVideoSensitiveContentDetected.PolicyViolation", "ContentSecurityDetectionError")
OUTPUT_IMAGE_MODERATION_CODES = ("OutputImageSensitiveContentDetected", "OutputImageSensitiveContentDetected.DeepFake")
OUTPUT_VIDEO_MODERATION_CODES = ("OutputVideoSensitiveContentDetected",
                                 "OutputVideoSensitiveContentDetected.PolicyViolation")
# The 429 codes a request fault may answer with (`SimConfig.rate_limit_code`).
RATE_LIMIT_CODES = ("ModelAccountRpmRateLimitExceeded", "ModelAccountTpmRateLimitExceeded",
                    "ModelAccountIpmRateLimitExceeded", "RateLimitExceeded.EndpointRPMExceeded",
                    "RateLimitExceeded.EndpointTPMExceeded", "APIAccountRpmRateLimitExceeded",
                    "AccountRateLimitExceeded", "QuotaExceeded", "ServerOverloaded", "SetLimitExceeded",
                    "InflightBatchsizeExceeded")


def documented(code: str, variant: str | None = None, **fields: Any) -> str:
    """Ark's message for `code` (or one of its documented variants), with `fields` filled in; a dotted code
    without a text of its own has its family's."""
    key = f"{code}.{variant}" if variant else code
    if key not in MESSAGES:
        key = key.split(".")[0]
    return MESSAGES[key].format(account=ACCOUNT_ID, **fields)


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
        placed = "{request_id}" in self.message  # a text that names the request id in its own place
        return {
            "error": {
                "code": self.code,
                "message": self.message.replace("{request_id}", request_id) if placed
                else f"{self.message} Request ID: {request_id}",
                "param": self.param,
                "type": ERROR_TYPES.get(self.status, ""),
            }
        }


def invalid(param: str, reason: str, code: str = "InvalidParameter") -> SimError:
    """400 for a bad value, naming the parameter the way Ark's messages do."""
    return SimError(400, code, documented("InvalidParameter", "named", param=param, reason=reason), param)


def missing(param: str) -> SimError:
    return SimError(400, "MissingParameter", param=param)


def moderation(code: str) -> SimError:
    """400 for a moderation verdict (or the moderation service's failure) on a request."""
    if code == "ContentSecurityDetectionError":
        return SimError(400, code, documented(code, request_id="{request_id}", csd_id=uuid.uuid4().hex))
    return SimError(400, code, documented(code))


def unsupported(param: str, model: str) -> SimError:
    """400 for a field Ark knows but `model` does not accept."""
    code = "InvalidParameter.UnsupportedParameter"
    return SimError(400, code, documented(code, param=param, model=model), param)


def error_item(code: str) -> dict[str, str]:
    """`{code, message}` as Ark puts it in a per-image error or a failed video task."""
    return {"code": code, "message": documented(code)}
