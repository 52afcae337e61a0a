"""The local moto server gives the atomicity real DynamoDB and SQS guarantee, under parallel clients."""

from __future__ import annotations

import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.moto_server import MotoServer, start_moto_server

pytestmark = pytest.mark.stack


def client(server: MotoServer, service: str) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, max_pool_connections=64),
    )


def create_counter_table(dynamodb: Any) -> str:
    name = f"counters-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
    )
    return name


def test_parallel_conditional_increments_never_exceed_the_limit(moto_server: MotoServer) -> None:
    dynamodb = client(moto_server, "dynamodb")
    table = create_counter_table(dynamodb)
    limit, attempts = 10, 50
    start_together = threading.Barrier(attempts)

    def increment(_: int) -> bool:
        start_together.wait()
        try:
            dynamodb.update_item(
                TableName=table,
                Key={"key": {"S": "quota"}},
                UpdateExpression="ADD used :one",
                ConditionExpression="attribute_not_exists(used) OR used < :limit",
                ExpressionAttributeValues={":one": {"N": "1"}, ":limit": {"N": str(limit)}},
            )
        except ClientError as error:
            assert error.response["Error"]["Code"] == "ConditionalCheckFailedException"
            return False
        return True

    with ThreadPoolExecutor(attempts) as pool:
        outcomes = list(pool.map(increment, range(attempts)))

    assert outcomes.count(True) == limit
    item = dynamodb.get_item(TableName=table, Key={"key": {"S": "quota"}}, ConsistentRead=True)["Item"]
    assert item["used"] == {"N": str(limit)}


def test_parallel_transactions_admit_exactly_the_remaining_quota(moto_server: MotoServer) -> None:
    dynamodb = client(moto_server, "dynamodb")
    table = create_counter_table(dynamodb)
    remaining, requests = 7, 30
    start_together = threading.Barrier(requests)

    def create_task(number: int) -> bool:
        start_together.wait()
        try:
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": table,
                            "Key": {"key": {"S": "quota"}},
                            "UpdateExpression": "ADD used :one",
                            "ConditionExpression": "attribute_not_exists(used) OR used < :limit",
                            "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": str(remaining)}},
                        }
                    },
                    {"Put": {"TableName": table, "Item": {"key": {"S": f"task-{number}"}}}},
                ]
            )
        except ClientError as error:
            assert error.response["Error"]["Code"] == "TransactionCanceledException"
            return False
        return True

    with ThreadPoolExecutor(requests) as pool:
        accepted = sum(pool.map(create_task, range(requests)))

    tasks = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    assert accepted == remaining
    assert len([item for item in tasks if item["key"]["S"].startswith("task-")]) == remaining


def test_a_long_poll_waits_for_a_message_without_blocking_other_requests(moto_server: MotoServer) -> None:
    sqs, dynamodb = client(moto_server, "sqs"), client(moto_server, "dynamodb")
    queue_url = sqs.create_queue(QueueName=f"lane-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    table = create_counter_table(dynamodb)
    # Visible only after a second, so the poll below is certainly waiting when it arrives.
    sqs.send_message(QueueUrl=queue_url, MessageBody="wake up", DelaySeconds=1)
    wait_s = 10
    received: dict[str, Any] = {}

    def long_poll() -> None:
        received["messages"] = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=wait_s).get("Messages", [])

    poller = threading.Thread(target=long_poll)
    poller.start()
    # Writes answered while the poll waits (no timed bound: a loaded machine slows both alike). A server that
    # served the poll alone would answer none of them until the message came.
    answered_during_the_poll = 0
    while poller.is_alive():
        dynamodb.put_item(TableName=table, Item={"key": {"S": "during-the-poll"}})
        answered_during_the_poll += poller.is_alive()
    poller.join()

    assert [message["Body"] for message in received["messages"]] == ["wake up"]
    assert answered_during_the_poll >= 5


def test_reset_forgets_every_resource(moto_server: MotoServer) -> None:
    dynamodb, s3 = client(moto_server, "dynamodb"), client(moto_server, "s3")
    create_counter_table(dynamodb)
    s3.create_bucket(Bucket=f"bucket-{uuid.uuid4().hex[:8]}")

    moto_server.reset()

    assert dynamodb.list_tables()["TableNames"] == []
    assert s3.list_buckets()["Buckets"] == []


def test_stop_ends_the_server_process_and_frees_its_port() -> None:
    server = start_moto_server()
    pid, port = server.process.pid, int(server.endpoint_url.rsplit(":", 1)[1])

    server.stop()

    assert not Path(f"/proc/{pid}").exists()
    with socket.create_server(("127.0.0.1", port)):
        pass
