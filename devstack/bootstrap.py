"""Create arkflow's tables, queues and bucket from `chalicelib.resources` (local stack and tests)."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.resources import MEDIA_BUCKET, QUEUES, TABLES


def create_tables(dynamodb: Any, prefix: str) -> None:
    existing = set(dynamodb.list_tables()["TableNames"])
    for table in TABLES:
        name = table.physical_name(prefix)
        if name in existing:
            continue
        dynamodb.create_table(**table.create_table_args(prefix))
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )


def create_queues(sqs: Any, prefix: str) -> dict[str, str]:
    """Create every queue (the lanes' and the others') and its DLQ; returns queue name -> queue URL."""
    urls: dict[str, str] = {}
    for queue in QUEUES:
        dlq_url = sqs.create_queue(QueueName=queue.dlq_name(prefix))["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        urls[queue.name] = sqs.create_queue(
            QueueName=queue.queue_name(prefix),
            Attributes={
                "VisibilityTimeout": str(queue.visibility_timeout_s),
                "RedrivePolicy": json.dumps(queue.redrive_policy(dlq_arn)),
            },
        )["QueueUrl"]
    return urls


def create_bucket(s3: Any, prefix: str) -> str:
    name = MEDIA_BUCKET.physical_name(prefix)
    s3.create_bucket(Bucket=name)
    return name


def create_all(session: Any, prefix: str) -> None:
    """`session` is a boto3 Session (or the boto3 module); clients pick endpoints up from the environment."""
    create_tables(session.client("dynamodb"), prefix)
    create_queues(session.client("sqs"), prefix)
    create_bucket(session.client("s3"), prefix)
