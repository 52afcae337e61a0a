"""`Idempotency-Key`: a create sent again with the same key gets the first answer, never a second task.

The key is scoped to the account (a new account with a deleted one's name replays nothing of it) and remembered
with the request's fingerprint and the answer, in the same transaction that creates the task, for
`IDEMPOTENCY_TTL_S`. The same key with another request is 409 `idempotency_conflict`. A key whose task could not be
queued is forgotten, so the retry the 503 asks for creates a task.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.transactions import TransactWrite

from chalicelib.errors import Conflict
from chalicelib.store.records import IdempotencyRecord

IDEMPOTENCY_TTL_S = 24 * 3600
Answer = tuple[int, dict[str, Any]]


def fingerprint(body: Any) -> str:
    """What a request was, whatever the order of its keys."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def scoped(user_id: str, key: str | None) -> str | None:
    return f"{user_id}#{key}" if key else None


def replay(idempotency_id: str, fingerprint: str, now: float) -> Answer | None:
    """The answer (status, body) this key got, if it is live; 409 when it was used with another request."""
    try:
        record = IdempotencyRecord.get(idempotency_id, consistent_read=True)
    except DoesNotExist:
        return None
    if record.expires_at_epoch <= now:
        return None
    if record.fingerprint != fingerprint:
        raise Conflict("This Idempotency-Key was already used with a different request.", code="idempotency_conflict")
    return int(record.status_code), dict(record.response_body)


def remember(transaction: TransactWrite, idempotency_id: str, fingerprint: str, task_id: str,
             answer: Answer, now: float) -> None:
    """Keep the key's answer, in `transaction`, unless a live record of the key is there already."""
    status_code, body = answer
    transaction.save(
        IdempotencyRecord(
            idempotency_id,
            fingerprint=fingerprint,
            task_id=task_id,
            status_code=status_code,
            response_body=body,
            expires_at_epoch=int(now) + IDEMPOTENCY_TTL_S,
        ),
        condition=(
            IdempotencyRecord.idempotency_key.does_not_exist() | (IdempotencyRecord.expires_at_epoch <= int(now))
        ),
    )


def forget(idempotency_id: str) -> None:
    IdempotencyRecord(idempotency_id).delete()
