"""Ark's error envelope (shared ark-api.md 4.1): `{"error": {"code", "message", "param", "type"}}`."""

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


class SimError(Exception):
    """An Ark error answer; raising it anywhere in a handler produces Ark's body and status."""

    def __init__(self, status: int, code: str, message: str, param: str = "",
                 headers: dict[str, str] | None = None) -> None:
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
    return SimError(400, code, f"The parameter `{param}` specified in the request is not valid: {reason}.", param)


def missing(param: str) -> SimError:
    return SimError(400, "MissingParameter", f"The request failed because it is missing the `{param}` parameter.",
                    param)
