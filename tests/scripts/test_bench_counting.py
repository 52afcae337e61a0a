"""The bench's request counter: capacity units as DynamoDB bills them, from the calls botocore really makes."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import botocore.session
import pytest
from moto import mock_aws

from scripts.bench import RequestCounter


@pytest.fixture
def counter() -> Iterator[RequestCounter]:
    original = botocore.session.Session.create_client
    counter = RequestCounter()
    counter.install()
    try:
        yield counter
    finally:
        botocore.session.Session.create_client = original  # type: ignore[method-assign]


def test_transactions_and_consistent_reads_are_billed_as_dynamodb_bills_them(counter: RequestCounter) -> None:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(TableName="t", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
        dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "t", "Item": {"k": {"S": "a"}}}},
            {"ConditionCheck": {"TableName": "t", "Key": {"k": {"S": "b"}},
                                "ConditionExpression": "attribute_not_exists(k)"}},
        ])
        dynamodb.get_item(TableName="t", Key={"k": {"S": "a"}}, ConsistentRead=True)
        dynamodb.get_item(TableName="t", Key={"k": {"S": "a"}})

    capacity = counter.capacity_snapshot()
    assert capacity[("wcu", "api")] == 2.0  # the transaction's put: two write units
    assert capacity[("rcu", "api")] == 2.0 + 1.0 + 0.5  # its condition check, the strong read, the eventual one
    assert counter.snapshot()[("dynamodb", "api")] == 4
