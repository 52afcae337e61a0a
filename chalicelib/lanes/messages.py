"""What a lane worker is handed (a `Delivery`: one Lambda-shaped SQS record) and what it answers for it: `DONE`
(acknowledged) or a `Retry` (the message given back, visible again after a delay)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One Lambda-shaped SQS record."""

    message_id: str
    receipt_handle: str
    task_id: str
    receive_count: int
    # `time.monotonic()` by which its work must be done, leaving the Lambda time to record the outcome.
    deadline: float | None = None
    # Whether it has the invocation's time to itself (the batch's first record), or records before it used some.
    first_in_invocation: bool = True
    # A new task's first message names its model and user: its worker acquires before reading the task.
    start: tuple[str, str] | None = None
    # A results copy's message carries what the copy needs of its succeeded task (`results.copy_order`).
    copy: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: dict[str, Any], deadline: float | None = None, first_in_invocation: bool = True) -> Delivery:
        body = json.loads(record["body"])
        start = (str(body["model_id"]), str(body["user_id"])) if body.get("model_id") and body.get("user_id") \
            else None
        return cls(
            message_id=record["messageId"],
            receipt_handle=record["receiptHandle"],
            task_id=str(body["task_id"]),
            start=start,
            copy=body["copy"] if isinstance(body.get("copy"), dict) else None,
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", "1")),
            deadline=deadline,
            first_in_invocation=first_in_invocation,
        )


@dataclass(frozen=True)
class Retry:
    """Give the message back: visible again after `delay_s`."""

    delay_s: int


DONE = None
Outcome = Retry | None
