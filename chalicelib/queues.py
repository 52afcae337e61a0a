"""Lane queues: where accepted tasks wait for their worker."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from chalicelib.resources import lane_named
from chalicelib.settings import get_settings


@lru_cache(maxsize=32)
def _queue_url(sqs: Any, queue_name: str) -> str:
    return sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]


def queue_url(sqs: Any, lane_name: str) -> str:
    return _queue_url(sqs, lane_named(lane_name).queue_name(get_settings().resource_prefix))


def enqueue(sqs: Any, lane_name: str, task_id: str, delay_s: int = 0) -> None:
    sqs.send_message(
        QueueUrl=queue_url(sqs, lane_name),
        MessageBody=json.dumps({"task_id": task_id}),
        DelaySeconds=delay_s,
    )
