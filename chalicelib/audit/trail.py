"""The audit trail: who changed what, when, with the state before and after (docs/design.md, "Audit trail").

Append-only: an entry is one conditional put on a key nobody wrote (`entry_key`: its time, then a unique tail), and
nothing in arkflow updates or deletes one. Entries are read newest first from the whole trail, or by actor or
target through their indexes, never by a scan. `before`/`after` are stored without secrets (values under names
such as `password`, `secret`, `token`, `hash` are redacted) and bounded, so an entry stays far under DynamoDB's
400 KB item limit: long strings and lists are cut, and a side still too large is replaced by a note of its size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from pynamodb.exceptions import PutError
from pynamodb.models import Model

from chalicelib.api.cursors import decode_cursor, encode_cursor
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.store import writes
from chalicelib.store.records import AuditRecord, TaskRecord

log = logging.getLogger(__name__)

FEED = "all"
SYSTEM_ACTOR = "system"
# A string longer than this is cut, a list longer than MAX_LIST_ITEMS too; a side still larger than
# MAX_SIDE_BYTES (as JSON) is replaced by a note: two sides and the other fields stay well under 400 KB.
MAX_STRING_CHARS = 4096
MAX_LIST_ITEMS = 100
MAX_SIDE_BYTES = 150_000
MAX_DEPTH = 8
# Names whose values are never stored. A flag or a number tells no secret and stays: `password_changed: true`, a
# video model's price `per_million_tokens: 15.0`.
_SECRET_NAME = re.compile(r"password|secret|token|hash|api_?key|signing|credential", re.IGNORECASE)
_NO_SECRET = (bool, int, float, type(None))
REDACTED = "[redacted]"
# A page answers at most this many bytes of entries (a Lambda's answer is at most 6 MB), whatever its `limit`.
PAGE_MAX_BYTES = 4_000_000
# Entries a page reads at most when both filters are given (one is the index, the other is checked here).
PAGE_MAX_EXAMINED = 1000
_ENTRY_KEY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z#[0-9a-f]{16}")


def bounded(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-safe data without secrets, its long strings and lists cut (cuts are marked)."""
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return "[nested too deep]"
        return {str(name): (REDACTED if _SECRET_NAME.search(str(name)) and not isinstance(item, _NO_SECRET)
                            else bounded(item, depth + 1))
                for name, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        kept = [bounded(item, depth + 1) for item in items[:MAX_LIST_ITEMS]]
        if len(items) > MAX_LIST_ITEMS:
            kept.append(f"[{len(items) - MAX_LIST_ITEMS} more items cut]")
        return kept
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        return value[:MAX_STRING_CHARS] + f"[{len(value) - MAX_STRING_CHARS} more characters cut]"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _side(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    kept = bounded(value)
    size = len(json.dumps(kept, ensure_ascii=False).encode())
    return kept if size <= MAX_SIDE_BYTES else {"cut": True, "size_bytes": size}


def record_state(record: Model) -> dict[str, Any]:
    """A record's stored attributes, as an entry's `before` or `after` (redacted and bounded when written)."""
    return dict(record.attribute_values)


def entry_body(record: AuditRecord) -> dict[str, Any]:
    return {"at": record.at, "actor": record.actor, "action": record.action, "target": record.target,
            "before": record.before, "after": record.after}


class AuditTrail:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock

    def record(self, *, actor: str, action: str, target: str, before: dict[str, Any] | None,
               after: dict[str, Any] | None) -> None:
        """Append one entry, now."""
        at = iso(self.clock.now())
        self._append(f"{at}#{secrets.token_hex(8)}", at, actor, action, target, before, after)

    def record_refund(self, task: TaskRecord) -> None:
        """The quota a task gave back as it ended (`statemachine.refund_listeners`). Its key is derived from the
        task and the end's time, so telling one refund twice writes one entry."""
        at = task.finished_at or iso(self.clock.now())
        tail = hashlib.sha256(f"quota.refund\n{task.task_id}".encode()).hexdigest()[:16]
        self._append(f"{at}#{tail}", at, SYSTEM_ACTOR, "quota.refund", f"task:{task.task_id}",
                     {"status": "charged", "quota_keys": list(task.quota_keys or [])},
                     {"status": task.status, "quota_refunded": True, "user_id": task.user_id,
                      "model_id": task.model_id})

    def _append(self, entry_key: str, at: str, actor: str, action: str, target: str,
                before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        entry = AuditRecord(FEED, entry_key, at=at, actor=actor, action=action, target=target,
                            before=_side(before), after=_side(after))
        try:
            entry.save(condition=AuditRecord.entry_key.does_not_exist())
        except PutError as error:
            if not writes.condition_failed(error):
                raise
            log.info("audit entry %s was written already", entry_key)

    def page(self, *, actor: str | None, target: str | None, cursor: str | None,
             limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Entries newest first (by `target`, `actor`, both or neither) and the cursor of the next page (None: no
        more). A page may hold fewer than `limit` and still have a cursor (a size or read bound was met)."""
        older_than = decode_cursor(cursor, _ENTRY_KEY) if cursor else None
        condition = AuditRecord.entry_key < older_than if older_than else None
        both = actor is not None and target is not None
        query: Callable[..., Any]
        if target is not None:
            query, key = AuditRecord.by_target.query, target
        elif actor is not None:
            query, key = AuditRecord.by_actor.query, actor
        else:
            query, key = AuditRecord.query, FEED
        results = query(key, range_key_condition=condition, scan_index_forward=False,
                        limit=PAGE_MAX_EXAMINED if both else limit + 1,
                        page_size=min(100, PAGE_MAX_EXAMINED if both else limit + 1))
        entries: list[dict[str, Any]] = []
        size = 0
        last_examined: str | None = None
        examined = 0
        for record in results:
            examined += 1
            if both and record.actor != actor:
                last_examined = record.entry_key
                continue
            body = entry_body(record)
            body_size = len(json.dumps(body, ensure_ascii=False).encode())
            if len(entries) == limit or (entries and size + body_size > PAGE_MAX_BYTES):
                return entries, encode_cursor(last_examined or record.entry_key)
            entries.append(body)
            size += body_size
            last_examined = record.entry_key
        if both and examined >= PAGE_MAX_EXAMINED and last_examined:
            return entries, encode_cursor(last_examined)
        return entries, None
