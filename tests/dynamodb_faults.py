"""DynamoDB failures as AWS sends them and moto never does: transaction conflicts, internal errors.

`DynamoFaults.installed(monkeypatch)` wraps botocore's `BaseClient._make_api_call`, above botocore's own retries,
so a fault reaches the code exactly as an error botocore gave up on (or never retries) would. Each fault names the
DynamoDB operation, a predicate on its request, and how many times it fires; everything else reaches moto.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

Request = dict[str, Any]


def transaction_conflict(items: int, conflicted: int = 0) -> dict[str, Any]:
    """TransactWriteItems cancelled because another transaction was writing item `conflicted` at the same time."""
    reasons = [{"Code": "None"} for _ in range(items)]
    reasons[conflicted] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
    codes = ", ".join(reason["Code"] for reason in reasons)
    message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
    return {
        "Error": {"Code": "TransactionCanceledException", "Message": message},
        "CancellationReasons": reasons,
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


def write_conflict() -> dict[str, Any]:
    """A single-item write refused while a transaction writes the same item."""
    return {"Error": {"Code": "TransactionConflictException",
                      "Message": "Transaction is ongoing for the item"},
            "ResponseMetadata": {"HTTPStatusCode": 400}}


def internal_server_error() -> dict[str, Any]:
    """What reaches the caller once botocore's retries of a 500 are spent."""
    return {"Error": {"Code": "InternalServerError", "Message": "Internal server error"},
            "ResponseMetadata": {"HTTPStatusCode": 500}}


def sets_attribute(name: str) -> Callable[[Request], bool]:
    """An UpdateItem request whose expression names the attribute `name`."""
    return lambda request: name in (request.get("ExpressionAttributeNames") or {}).values()


def updates_attribute(name: str) -> Callable[[Request], bool]:
    """A TransactWriteItems request one of whose updates names the attribute `name`."""
    return lambda request: any(name in (item["Update"].get("ExpressionAttributeNames") or {}).values()
                               for item in request.get("TransactItems", []) if "Update" in item)


def on_table(logical_name: str) -> Callable[[Request], bool]:
    """A single-item request on one of arkflow's tables (by its logical name, e.g. `tasks`)."""
    return lambda request: str(request.get("TableName", "")).endswith(f"-{logical_name}")


@dataclass
class Fault:
    operation: str
    response: dict[str, Any] | Exception  # an error answer from DynamoDB, or botocore's own (no answer at all)
    when: Callable[[Request], bool]
    times: int
    raised: int = 0


class DynamoFaults:
    def __init__(self) -> None:
        self.faults: list[Fault] = []

    @classmethod
    def installed(cls, monkeypatch: pytest.MonkeyPatch) -> DynamoFaults:
        faults = cls()
        real = BaseClient._make_api_call

        def make_api_call(client: BaseClient, operation_name: str, api_params: Request) -> Any:
            if client.meta.service_model.service_name == "dynamodb":
                fault = faults._due(operation_name, api_params)
                if fault is not None and isinstance(fault.response, Exception):
                    raise fault.response
                if fault is not None:
                    raise ClientError(copy.deepcopy(fault.response), operation_name)  # type: ignore[arg-type]
            return real(client, operation_name, api_params)

        monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
        return faults

    def add(self, operation: str, response: dict[str, Any] | Exception, *, times: int = 1,
            when: Callable[[Request], bool] = lambda request: True) -> Fault:
        fault = Fault(operation, response, when, times)
        self.faults.append(fault)
        return fault

    def _due(self, operation: str, request: Request) -> Fault | None:
        for fault in self.faults:
            if fault.operation == operation and fault.raised < fault.times and fault.when(request):
                fault.raised += 1
                return fault
        return None
