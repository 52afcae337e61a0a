"""Opaque page cursors: a sort key, base64url-encoded, accepted back only in the key's own format (it becomes a key
condition: no value outside that format may reach DynamoDB, whose sort keys take 1,024 bytes at most)."""

from __future__ import annotations

import base64
import re

from chalicelib.errors import ValidationFailed


def encode_cursor(sort_key: str) -> str:
    return base64.urlsafe_b64encode(sort_key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, key_format: re.Pattern[str]) -> str:
    """The sort key a cursor stands for; 400 for anything else."""
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid() from exc
    # ASCII first: a pattern's `\d` matches any Unicode digit ("٢٠٢٦"), and the keys are made of ASCII alone.
    if not decoded.isascii() or key_format.fullmatch(decoded) is None:
        raise _invalid()
    return decoded


def _invalid() -> ValidationFailed:
    return ValidationFailed("Invalid cursor.", details=[{"field": "cursor", "message": "not a cursor"}])
