"""Strong validation of JSON body fields; `null` counts as absent (the official SDK sends unset fields as null)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from arksim.errors import invalid, missing


def required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise missing(name)
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    return value


def optional_str(body: dict[str, Any], name: str, max_length: int | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if max_length is not None and len(value) > max_length:
        raise invalid(name, f"must be at most {max_length} characters")
    return value


def optional_bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(name, "must be a boolean")
    return value


def optional_int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # JSON true/false decode to bool, which Python counts as int.
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, "must be an integer")
    if not low <= value <= high:
        raise invalid(name, f"must be within [{low}, {high}]")
    return value


def optional_enum(body: dict[str, Any], name: str, allowed: Sequence[str]) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise invalid(name, f"must be one of {', '.join(allowed)}")
    return value


def optional_object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(name, "must be an object")
    return value
