"""moto without the costs AWS never charges, for the local stack and the tests (same answers, less time).

- DynamoDB transactions: moto backs up every table a transaction touches with `copy.deepcopy` before it runs, so
  each transaction costs time in proportion to the items stored (a thousand tasks: tens of milliseconds, under
  the server's DynamoDB lock). Here only the items the transaction names are backed up and, if it is cancelled,
  put back as they were: the same all-or-nothing outcome.
- SQS receives: moto asks each queued message whether it is visible (and not delayed) many times per receive,
  each time building datetimes for "now", so a receive from a queue of 600 messages took a third of a second.
  "Now" in epoch milliseconds comes from `time.time()` here: the same value, a hundred times cheaper.
- DynamoDB comparisons: moto compares every key value through `DynamoType.cast_value`, which asks a value whether
  it is a number, a set, a list, a map or null before it returns a string as it is. An index query looks at every
  item of the table and sorts its matches that way, so a query of the tasks' `parked_by_model` index grew by
  tens of milliseconds with a thousand tasks stored, under the server's DynamoDB lock. Strings, binaries and
  booleans are returned as they are at once here: the same value.
- Every call: moto lists its responses class's functions (`inspect.getmembers`, a few hundred names) to see
  whether the action is one. A class's functions do not change while it serves, so each class is listed once.
"""

from __future__ import annotations

import copy
import functools
import time
from typing import Any

import moto.core.responses as core_responses
import moto.sqs.models as sqs_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DDBType, DynamoType
from moto.dynamodb.models.table import Table

_installed = False


class _TablesAsTheyAre:
    """Stands for the `copy` module in moto's DynamoDB backend: a table is "copied" as itself (a cancelled
    transaction is rolled back item by item instead), anything else as `copy` does."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


def _key_of(table: Table, operation: dict[str, Any]) -> tuple[DynamoType, DynamoType | None] | None:
    attributes = operation.get("Key") or operation.get("Item") or {}
    if table.hash_key_attr not in attributes:
        return None
    hash_key = DynamoType(attributes[table.hash_key_attr])
    range_key = DynamoType(attributes[table.range_key_attr]) if table.range_key_attr in attributes else None
    return hash_key, range_key


def _restore(table: Table, key: tuple[DynamoType, DynamoType | None], item: Any) -> None:
    hash_key, range_key = key
    if table.has_range_key:
        if item is None:
            table.items.get(hash_key, {}).pop(range_key, None)
        else:
            table.items[hash_key][range_key] = item
    elif item is None:
        table.items.pop(hash_key, None)
    else:
        table.items[hash_key] = item


def _now_millis(dt: Any = None, *, original: Any = sqs_models.unix_time_millis) -> float:
    return time.time() * 1000.0 if dt is None else float(original(dt))


_AS_THEY_ARE = frozenset({DDBType.STRING, DDBType.BINARY, DDBType.BOOLEAN})


def _cast_value(value: DynamoType, *, original: Any = DynamoType.cast_value.fget) -> Any:
    return value.value if value.type in _AS_THEY_ARE else original(value)


def install() -> None:
    """Patch moto's `transact_write_items`, its SQS clock, its DynamoDB comparisons and its action look-up
    (idempotent)."""
    global _installed
    if _installed:
        return
    core_responses.method_names_from_class = functools.cache(core_responses.method_names_from_class)
    sqs_models.unix_time_millis = _now_millis  # type: ignore[assignment]
    DynamoType.cast_value = property(_cast_value)  # type: ignore[method-assign,assignment]
    original = DynamoDBBackend.transact_write_items
    original.__globals__["copy"] = _TablesAsTheyAre()

    @functools.wraps(original)
    def transact_write_items(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        backups = []
        for entry in transact_items:
            operation = next(iter(entry.values()), {})
            table = backend.tables.get(operation.get("TableName", ""))
            key = _key_of(table, operation) if table is not None else None
            if table is None or key is None or (table.has_range_key and key[1] is None):
                continue  # moto refuses it as it would have
            backups.append((table, key, copy.deepcopy(table.get_item(*key))))
        try:
            original(backend, transact_items)
        except BaseException:
            for table, key, item in reversed(backups):
                _restore(table, key, item)
            raise

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _installed = True
