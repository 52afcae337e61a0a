"""The middleware names the task a REST request's query names, as Chalice hands the query over (a MultiDict)."""

from __future__ import annotations

from types import SimpleNamespace

from chalice.app import MultiDict

from chalicelib import observability

TASK = "tsk_" + "a" * 26


def test_a_callbacks_query_names_its_task_in_the_log_keys():
    event = SimpleNamespace(context={"requestId": "r-1"}, uri_params=None,
                            query_params=MultiDict({"task_id": [TASK], "token": ["secret"]}))
    seen = observability.middleware(event, lambda _event: observability.current_keys())
    assert seen.get("task_id") == TASK
    assert "secret" not in repr(seen)
