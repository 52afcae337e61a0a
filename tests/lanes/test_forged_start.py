"""A first message whose model or user is not the task's (a careless or hostile sender) never takes another
user's slot, nor parks the task under another model."""

from __future__ import annotations

import json

from chalicelib import aws, queues
from chalicelib.store import slots
from tests.factories import IMAGE_MODEL, IMAGE_TASK, OTHER, user_id_of
from tests.lane_fixtures import Lanes


def test_a_start_message_naming_another_user_takes_the_tasks_own_users_slot(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=2, max_running_per_user=1)
    task_id = lanes.submit(IMAGE_TASK)
    own = lanes.receive_for("image", task_id)
    aws.sqs().delete_message(QueueUrl=queues.queue_url(aws.sqs(), "image"), ReceiptHandle=own["receiptHandle"])
    queues.enqueue(aws.sqs(), "image", task_id, start=(IMAGE_MODEL, user_id_of(OTHER[0])))
    forged = lanes.receive_for("image", task_id)
    assert json.loads(forged["body"])["user_id"] == user_id_of(OTHER[0])

    lanes.worker("image").handle([forged])

    assert lanes.task(task_id).status == "succeeded"
    # Nothing of OTHER's stays taken: its user slot is free for its own tasks.
    assert slots.holders(slots.user_slot_key(IMAGE_MODEL, user_id_of(OTHER[0]))) == {}
