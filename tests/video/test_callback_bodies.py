"""Whatever body reaches Ark's callback route with a task's valid secret, the answer is 200 or a 400 naming what is
wrong, never a 500: the body is checked (an object carrying Ark's `id` and `status` as strings) before anything
else, and a refused one changes nothing and reads nothing at Ark."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lane_fixtures import Lanes
from tests.video.test_video_lane import callback_token, submitted

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def running_video(lanes: Lanes) -> tuple[str, str, str]:
    """A video still running at Ark (so a status read leaves it running): its id, Ark's id and the callback query."""
    lanes.ark.configure(video_run_s=3600)
    task_id = submitted(lanes)
    return task_id, lanes.task(task_id).external_id, f"?task_id={task_id}&token={callback_token(lanes, task_id)}"


def post(lanes: Lanes, query: str, raw: bytes | str) -> Any:
    return lanes.api.request("POST", f"/api/queue/callback{query}", raw=raw)


NOT_OBJECTS = [[], "x", 1, None, True, [{"id": "cgt-1", "status": "succeeded"}]]
# Each with the one field it gets wrong ("cgt-1" stands for the task's id at Ark).
WITHOUT_ID_AND_STATUS = [
    ({"status": "succeeded"}, "id"),
    ({"id": "cgt-1"}, "status"),
    ({"id": ["cgt-1"], "status": "succeeded"}, "id"),
    ({"id": "cgt-1", "status": ["succeeded"]}, "status"),
    ({"id": "cgt-1", "status": {"a": 1}}, "status"),
    ({"id": 7, "status": "succeeded"}, "id"),
    ({"id": "cgt-1", "status": "s" * 129}, "status"),
]


@pytest.mark.abuse
def test_a_json_body_that_is_no_object_is_refused_with_the_error_body(lanes: Lanes) -> None:
    task_id, _, query = running_video(lanes)
    before = lanes.task(task_id).version

    for body in NOT_OBJECTS:
        response = post(lanes, query, json.dumps(body))
        assert response.status_code == 400, body
        assert response.data["error"]["code"] == "validation_error", body
        assert response.data["error"]["details"][0]["field"] == "", body

    assert lanes.task(task_id).version == before and lanes.ark_calls("tasks.get") == 0


@pytest.mark.abuse
def test_an_object_without_arks_id_and_status_as_strings_is_refused_naming_the_field(lanes: Lanes) -> None:
    task_id, external_id, query = running_video(lanes)
    before = lanes.task(task_id).version

    for payload, field in WITHOUT_ID_AND_STATUS:
        sent = {key: external_id if value == "cgt-1" else value for key, value in payload.items()}
        response = post(lanes, query, json.dumps(sent))
        assert response.status_code == 400, payload
        assert [detail["field"] for detail in response.data["error"]["details"]] == [field], payload

    assert lanes.task(task_id).version == before and lanes.ark_calls("tasks.get") == 0


def test_arks_other_fields_are_ignored_and_the_callback_stays_a_hint(lanes: Lanes) -> None:
    task_id, external_id, query = running_video(lanes)
    wire = {**lanes.ark.sim.tasks.tasks[external_id].to_wire(), "status": "succeeded", "added_later": {"x": [1]}}

    response = post(lanes, query, json.dumps(wire))

    # Ark's own read says the task still runs: a callback claiming it succeeded ends nothing.
    assert response.status_code == 200 and response.data == {"received": True}
    assert lanes.task(task_id).status == "running" and lanes.ark_calls("tasks.get") == 1


@pytest.mark.abuse
@pytest.mark.hypothesis  # what `make test-deep` selects
@pytest.mark.timeout(3600 if DEEP else 180)
def test_no_body_of_any_shape_gets_a_500(lanes: Lanes) -> None:
    task_id, external_id, query = running_video(lanes)
    field_values = JSON_VALUES | st.just(external_id) | st.sampled_from(["queued", "running", "succeeded", "failed"])
    bodies = (
        JSON_VALUES.map(json.dumps)
        | st.fixed_dictionaries({}, optional={"id": field_values, "status": field_values,
                                              "content": JSON_VALUES}).map(json.dumps)
        | st.binary(max_size=64)
    )

    @settings(max_examples=1000 if DEEP else 80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(raw=bodies)
    def answer_is_never_a_server_error(raw: str | bytes) -> None:
        response = post(lanes, query, raw)
        assert response.status_code in (200, 400), (raw, response.status_code, response.data)
        if response.status_code == 400:
            assert response.data["error"]["code"] in ("validation_error", "malformed_json")

    answer_is_never_a_server_error()
    assert lanes.task(task_id).status == "running"  # Ark still runs it: no hint ended it
