"""The stack's alarms and tracing, read from the packaged templates: every dead-letter queue, and per model its
failure rate and its circuit, on the very metrics `chalicelib.observability` publishes; X-Ray as each stage says."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import observability
from chalicelib.resources import DEFAULT_MODELS, QUEUES, Queue
from chalicelib.settings import Settings, reload_settings
from chalicelib.store.records import TaskRecord
from infra import template
from infra.stages import STAGES
from infra.template import ALARM_TOPIC_ID, HAS_NOTIFICATION_TOPIC, dead_letter_queue_id, merge_template, model_alarm_id
from tests.infra.conftest import PACKAGED, resources_of

pytestmark = PACKAGED
ALARM = "AWS::CloudWatch::Alarm"


def _alarms(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: alarm["Properties"] for name, alarm in resources_of(stack, ALARM).items()}


def _notifies_both_topics(alarm: dict[str, Any]) -> bool:
    own, given = {"Ref": ALARM_TOPIC_ID}, {"Ref": "AlarmNotificationTopic"}
    expected = {"Fn::If": [HAS_NOTIFICATION_TOPIC, [own, given], [own]]}
    return alarm["AlarmActions"] == expected and alarm["OKActions"] == expected


def test_every_dead_letter_queue_of_the_stack_has_a_depth_alarm(templates: dict[str, dict[str, Any]]) -> None:
    """Found from the queues' redrive policies, not from the list the template was made from."""
    for stage, stack in templates.items():
        queues = resources_of(stack, "AWS::SQS::Queue")
        dead_letter_queues = {queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
                              for queue in queues.values() if "RedrivePolicy" in queue["Properties"]}
        assert len(dead_letter_queues) == len(QUEUES), stage  # each lane's, and the webhook deliveries'
        depth = {alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0]: alarm for alarm in _alarms(stack).values()
                 if alarm.get("MetricName") == "ApproximateNumberOfMessagesVisible"}
        assert set(depth) == dead_letter_queues, stage
        for alarm in depth.values():
            assert (alarm["Namespace"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
                "AWS/SQS", 0, "GreaterThanThreshold")
            assert _notifies_both_topics(alarm)


def test_a_new_queue_gets_its_dead_letter_alarm(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = Queue("exports", reserved_concurrency=2, maximum_concurrency=2, lambda_timeout_s=60)
    monkeypatch.setattr(template, "QUEUES", (*QUEUES, extra))
    resources = merge_template(STAGES["prod"], {"Resources": {}})["Resources"]
    assert resources[f"{dead_letter_queue_id(extra)}Alarm"]["Properties"]["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [dead_letter_queue_id(extra), "QueueName"]}}]


def _published(model_id: str, capsys: pytest.CaptureFixture[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(metric name, namespace) -> the dimensions of the EMF documents `chalicelib.observability` prints for a
    failed task and an open circuit of `model_id`."""
    moment = "2026-01-01T00:00:10.000Z"
    observability.on_task_written(TaskRecord("tsk_alarm", model_id=model_id, status="failed", created_at=moment,
                                             started_at=moment, updated_at=moment, finished_at=moment))
    observability.emit_circuit_state(model_id, True)
    observability.flush_metrics()
    found = {}
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                found[(metric["Name"], directive["Namespace"])] = {
                    dimension: document[dimension] for dimension in directive["Dimensions"][0]}
    return found


@pytest.fixture
def emf(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Metrics published as in Lambda; the environment set through the monkeypatch given is put back after."""
    monkeypatch.setenv("EMF_METRICS", "1")
    reload_settings()
    yield monkeypatch
    monkeypatch.undo()
    reload_settings()


def test_each_model_has_a_failure_rate_and_a_circuit_alarm_on_the_metrics_the_app_publishes(
    templates: dict[str, dict[str, Any]], emf: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for stage_name, stack in templates.items():
        stage = STAGES[stage_name]
        emf.setenv("ARKFLOW_PREFIX", stage.prefix)  # the functions' environment names the namespace
        reload_settings()
        alarms = _alarms(stack)
        assert stage.alarmed_models() == tuple(model.model_id for model in DEFAULT_MODELS)
        for model_id in stage.alarmed_models():
            published = _published(model_id, capsys)
            rate = alarms[model_alarm_id(model_id, "FailureRate")]
            queries = {query["Id"]: query for query in rate["Metrics"]}
            for query_id, name in (("failed", observability.TASKS_FAILED), ("finished", observability.TASKS_FINISHED)):
                stat = queries[query_id]["MetricStat"]
                assert (stat["Period"], stat["Stat"]) == (15 * 60, "Sum")
                metric = stat["Metric"]
                dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
                assert published[(metric["MetricName"], metric["Namespace"])] == dimensions == {"model_id": model_id}
                assert metric["MetricName"] == name
            [returned] = [query for query in rate["Metrics"] if query["ReturnData"]]
            assert returned["Expression"] == (
                f"IF(finished >= {stage.failure_rate_min_tasks}, FILL(failed, 0) / finished, 0)")
            assert (rate["Threshold"], rate["ComparisonOperator"]) == (
                stage.failure_rate_threshold, "GreaterThanThreshold")

            circuit = alarms[model_alarm_id(model_id, "CircuitOpen")]
            dimensions = {d["Name"]: d["Value"] for d in circuit["Dimensions"]}
            assert published[(circuit["MetricName"], circuit["Namespace"])] == dimensions == {"model_id": model_id}
            assert (circuit["Statistic"], circuit["Threshold"], circuit["ComparisonOperator"]) == (
                "Maximum", 1, "GreaterThanOrEqualToThreshold")
            assert _notifies_both_topics(rate) and _notifies_both_topics(circuit)


def test_a_model_an_admin_added_gets_alarms_when_the_stage_names_it() -> None:
    stage = dataclasses.replace(STAGES["prod"], extra_alarmed_models=("my-endpoint.v2", DEFAULT_MODELS[0].model_id))
    resources = merge_template(stage, {"Resources": {}})["Resources"]
    assert stage.alarmed_models().count(DEFAULT_MODELS[0].model_id) == 1
    for kind in ("FailureRate", "CircuitOpen"):
        assert model_alarm_id("my-endpoint.v2", kind) in resources
    assert len({model_alarm_id(model_id, "CircuitOpen") for model_id in stage.alarmed_models()}) == len(
        stage.alarmed_models())


def test_tracing_is_on_in_prod_and_off_in_dev(templates: dict[str, dict[str, Any]],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert observability.tracer is None  # nor is the X-Ray SDK loaded, outside a traced stage
    for stage_name, stack in templates.items():
        tracing = STAGES[stage_name].tracing
        assert tracing == (stage_name == "prod")
        functions = resources_of(stack, "AWS::Serverless::Function")
        assert functions
        for name, function in functions.items():
            properties = function["Properties"]
            assert properties["Tracing"] == ("Active" if tracing else "PassThrough"), (stage_name, name)
            environment = properties["Environment"]["Variables"]
            assert environment["POWERTOOLS_TRACE_DISABLED"] == ("false" if tracing else "true"), (stage_name, name)
            assert environment["LOG_FORMAT"] == "json"
            monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", environment["POWERTOOLS_TRACE_DISABLED"])
            assert Settings().tracing is tracing  # the app makes its Tracer only then
        [api] = resources_of(stack, "AWS::Serverless::Api").values()
        assert api["Properties"]["TracingEnabled"] is tracing
        traced_roles = [role for role in resources_of(stack, "AWS::IAM::Role").values()
                        if any(statement.get("Sid") == "Tracing" for policy in role["Properties"].get("Policies", [])
                               for statement in policy["PolicyDocument"]["Statement"])]
        assert len(traced_roles) == (len(functions) if tracing else 0), stage_name
