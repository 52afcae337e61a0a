"""The shared page cursor accepts back only its key's own format (chalicelib/api/cursors.py)."""

from __future__ import annotations

import pytest

from chalicelib.api.cursors import decode_cursor, encode_cursor
from chalicelib.audit.trail import _ENTRY_KEY
from chalicelib.errors import ValidationFailed
from chalicelib.tasks.queries import _CREATED_KEY

TASK_KEY = "2026-12-02T00:00:00.000Z#tsk_" + "a" * 26
ENTRY_KEY = "2026-12-02T00:00:00.000Z#" + "0" * 16


@pytest.mark.parametrize(("key", "key_format"), [(TASK_KEY, _CREATED_KEY), (ENTRY_KEY, _ENTRY_KEY)])
def test_a_cursor_round_trips(key, key_format):
    assert decode_cursor(encode_cursor(key), key_format) == key


@pytest.mark.parametrize(("key", "key_format"), [(TASK_KEY, _CREATED_KEY), (ENTRY_KEY, _ENTRY_KEY)])
def test_non_ascii_digits_are_no_cursor(key, key_format):
    # Python's `\d` matches any Unicode decimal digit: "٢٠٢٦" (Arabic-Indic) is no time the keys are made of.
    forged = "\u0662\u0660\u0662\u0666" + key[4:]
    with pytest.raises(ValidationFailed):
        decode_cursor(encode_cursor(forged), key_format)


@pytest.mark.parametrize("cursor", ["", "a", "@@@@", "\u00e9t\u00e9", "x" * 10_000])
def test_malformed_cursors_are_400(cursor):
    with pytest.raises(ValidationFailed):
        decode_cursor(cursor, _CREATED_KEY)
