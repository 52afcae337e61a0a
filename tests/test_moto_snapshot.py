"""The per-test AWS copy: each restore is the state as built, whatever the test before it did."""

from __future__ import annotations

import boto3
from moto import mock_aws

from tests.moto_snapshot import fresh_state


def _build() -> None:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(TableName="snapshot-check", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    dynamodb.put_item(TableName="snapshot-check", Item={"id": {"S": "built"}})
    boto3.client("sqs").create_queue(QueueName="snapshot-check")


def _state() -> tuple[list[str], int]:
    items = boto3.client("dynamodb").scan(TableName="snapshot-check")["Items"]
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="snapshot-check")["QueueUrl"]
    waiting = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"])
    return sorted(item["id"]["S"] for item in items), waiting


def test_every_restore_is_the_built_state_and_nothing_a_test_did_after() -> None:
    for round_number in range(3):
        with mock_aws():
            fresh_state("snapshot-check", _build)
            assert _state() == (["built"], 0), round_number
            boto3.client("dynamodb").put_item(TableName="snapshot-check", Item={"id": {"S": f"t{round_number}"}})
            boto3.client("dynamodb").delete_item(TableName="snapshot-check", Key={"id": {"S": "built"}})
            sqs = boto3.client("sqs")
            sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName="snapshot-check")["QueueUrl"], MessageBody="x")
            assert _state() == ([f"t{round_number}"], 1)
