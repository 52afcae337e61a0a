"""Lane queues, where accepted tasks wait for their worker, and the other queues of `chalicelib.resources`."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from chalicelib.resources import Queue, lane_named
from chalicelib.settings import get_settings


@lru_cache(maxsize=32)
def _queue_url(sqs: Any, queue_name: str) -> str:
    return sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]


def queue_url(sqs: Any, lane_name: str) -> str:
    return url_of(sqs, lane_named(lane_name))


def url_of(sqs: Any, queue: Queue) -> str:
    return _queue_url(sqs, queue.queue_name(get_settings().resource_prefix))


def dead_letter_url_of(sqs: Any, queue: Queue) -> str:
    return _queue_url(sqs, queue.dlq_name(get_settings().resource_prefix))


# SQS refuses a message body over 256 KiB.
SQS_MAX_BODY_BYTES = 256 * 1024


def enqueue(sqs: Any, lane_name: str, task_id: str, delay_s: int = 0, *,
            start: tuple[str, str] | None = None, copy: dict[str, Any] | None = None) -> None:
    """One lane message for `task_id`. `start` (model id, user id): a new task's first message, whose worker
    acquires its slot before reading it (docs/design.md, "Parked tasks"). `copy`: a succeeded task's results
    copy, with what it needs of the task (`chalicelib.media.results.copy_order`), left out when it would not fit
    in a message (the worker reads the task then)."""
    body: dict[str, Any] = {"task_id": task_id}
    if start is not None:
        body["model_id"], body["user_id"] = start
    message = json.dumps(body)
    if copy is not None:
        with_copy = json.dumps({**body, "copy": copy})
        if len(with_copy.encode()) <= SQS_MAX_BODY_BYTES:
            message = with_copy
    sqs.send_message(QueueUrl=queue_url(sqs, lane_name), MessageBody=message, DelaySeconds=delay_s)
