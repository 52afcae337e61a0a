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
- JSON answers (DynamoDB's, SQS's): moto finds each member of every structure it answers by asking five alias
  providers, made anew for each member, for the keys it may be stored under, and looks each up: an item's every
  attribute value asks so for all ten of its possible types. For a plain dict those keys depend on the shape
  alone, so here they are worked out once per shape and looked up directly: the same keys in the same order.
- Every call: moto lists its responses class's functions (`inspect.getmembers`, a few hundred names) to see
  whether the action is one. A class's functions do not change while it serves, so each class is listed once.
"""

from __future__ import annotations

import copy
import functools
import time
from typing import Any

import moto.core.responses as core_responses
import moto.core.serialize as core_serialize
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


# A structure shape's fingerprint (its name, and each member's name, shape name, type and serialized name: all that
# the alias providers read when the value is a plain dict) -> each member's name and the keys to try, in order.
_MemberKeys = tuple[tuple[str, tuple[str, ...]], ...]
_member_keys: dict[tuple[Any, ...], _MemberKeys | None] = {}


def _keys_for_dicts(serializer: Any, shape: Any) -> _MemberKeys | None:
    members = shape.members
    fingerprint = (shape.name, tuple((name, member.name, member.type_name, member.serialization.get("name"))
                                     for name, member in members.items()))
    if fingerprint not in _member_keys:
        plan: list[tuple[str, tuple[str, ...]]] = []
        for name, member in members.items():
            member.parent = shape
            context = core_serialize.AttributePickerContext(obj={}, key=name, shape=member)
            plan.append((name, tuple(serializer._value_picker.get_possible_keys(context))))
        # A dotted key is a path into nested values: left to moto.
        dotted = any("." in key for _, keys in plan for key in keys)
        _member_keys[fingerprint] = None if dotted else tuple(plan)
    return _member_keys[fingerprint]


def _serialize_type_structure(serializer: Any, serialized: Any, value: Any, shape: Any, key: str, *,
                              original: Any = core_serialize.ResponseSerializer._serialize_type_structure) -> None:
    picker = getattr(serializer, "_value_picker", None)
    plan = None
    if (type(value) is dict and isinstance(serializer, core_serialize.BaseJSONSerializer)
            and type(picker) is core_serialize.XFormedAttributePicker and not picker.response_transformers):
        plan = _keys_for_dicts(serializer, shape)
    if plan is None:
        original(serializer, serialized, value, shape, key)
        return
    wrapper = serializer.MAP_TYPE() if key else serialized
    for (member_key, keys), member_shape in zip(plan, shape.members.values(), strict=True):
        member_shape.parent = shape
        member_value = next((value[stored] for stored in keys if stored in value), None)
        if member_value is not None:
            serializer._serialize(wrapper, member_value, member_shape, member_key)
    if key:
        serializer._default_serialize(serialized, wrapper, shape, key)


def install() -> None:
    """Patch moto's `transact_write_items`, its SQS clock, its DynamoDB comparisons, its action look-up and its JSON
    answers (idempotent)."""
    global _installed
    if _installed:
        return
    core_responses.method_names_from_class = functools.cache(core_responses.method_names_from_class)
    core_serialize.ResponseSerializer._serialize_type_structure = _serialize_type_structure  # type: ignore[method-assign]
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
