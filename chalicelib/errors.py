"""Errors the API turns into `{"error": {"code", "message", "details"?}}` with their HTTP status, and the one shape
of an error object, in API answers and in what a task records (`error`, `image_errors`, `results_copy_error`)."""

from __future__ import annotations

from typing import Any


def error_object(code: str, message: str, **more: Any) -> dict[str, Any]:
    """`{"code", "message", ...}`: an error as the API shows it and a task stores it (fields given as None are
    left out)."""
    return {"code": code, "message": message, **{name: value for name, value in more.items() if value is not None}}


class ApiError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": error_object(self.code, self.message, details=self.details)}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class ValidationFailed(ApiError):
    status, code = 400, "validation_error"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"


class Unavailable(ApiError):
    """Something this request needs did not answer (a store's write, Ark): nothing changed; try again."""

    status, code = 503, "unavailable"
