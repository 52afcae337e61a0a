"""The stack's alarms and tracing, read from the packaged templates: every dead-letter queue, and every model's
failure rate and circuit (models made after the deploy too), on the very metrics `chalicelib.observability`
publishes; X-Ray as each stage says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import observability
from chalicelib.resources import DEFAULT_MODELS, QUEUES, Queue
from chalicelib.settings import Settings, reload_settings
from chalicelib.store.records import TaskRecord
from infra import template
from infra.stages import STAGES
from infra.template import (
    ALARM_TOPIC_ID,
    CIRCUIT_OPEN_ALARM_ID,
    FAILURE_RATE_ALARM_ID,
    HAS_NOTIFICATION_TOPIC,
    dead_letter_queue_id,
    merge_template,
)
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
    """(metric name, namespace) -> the dimensions and the values of the EMF documents `chalicelib.observability`
    prints for a failed and a succeeded task and an open circuit of `model_id`."""
    moment = "2026-01-01T00:00:10.000Z"
    for status in ("failed", "succeeded"):
        observability.on_task_written(TaskRecord(f"tsk_{status}", model_id=model_id, status=status,
                                                 created_at=moment, started_at=moment, updated_at=moment,
                                                 finished_at=moment))
    observability.emit_circuit_state(model_id, True)
    observability.flush_metrics()
    found = {}
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                found[(metric["Name"], directive["Namespace"])] = {
                    "dimensions": {dimension: document[dimension] for dimension in directive["Dimensions"][0]},
                    "values": document[metric["Name"]]}
    return found


@pytest.fixture
def emf(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Metrics published as in Lambda; the environment set through the monkeypatch given is put back after."""
    monkeypatch.setenv("EMF_METRICS", "1")
    reload_settings()
    yield monkeypatch
    monkeypatch.undo()
    reload_settings()


# A Metrics Insights query of one series per value of a dimension: (statistic, metric, namespace, schema's
# dimension, grouped by).
PER_MODEL_QUERY = re.compile(
    r'SELECT (\w+)\((\w+)\) FROM SCHEMA\("([\w-]+)", (\w+)\) GROUP BY (\w+) ORDER BY \1\(\) DESC')


def test_every_model_an_admin_adds_is_watched_for_its_failure_rate_and_its_circuit(
    templates: dict[str, dict[str, Any]], emf: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One alarm of each kind, its Metrics Insights query grouped by model: a model made after the deploy (no
    default's id) has its series there, on the very metrics the app publishes, and no alarm names a model."""
    for stage_name, stack in templates.items():
        stage = STAGES[stage_name]
        emf.setenv("ARKFLOW_PREFIX", stage.prefix)  # the functions' environment names the namespace
        reload_settings()
        alarms = _alarms(stack)
        published = _published("made-by-an-admin.v2", capsys)
        watched = {}
        for alarm_id, statistic, metric in ((FAILURE_RATE_ALARM_ID, "AVG", observability.TASK_FAILED_SHARE),
                                            (CIRCUIT_OPEN_ALARM_ID, "MAX", observability.CIRCUIT_OPEN)):
            alarm = alarms[alarm_id]
            [query] = alarm["Metrics"]
            assert query["ReturnData"] is True and "MetricStat" not in query
            match = PER_MODEL_QUERY.fullmatch(query["Expression"])
            assert match is not None, query["Expression"]
            assert match.groups() == (statistic, metric, stage.prefix, "model_id", "model_id")
            # The schema is exactly the dimensions the app publishes the metric with: the query finds its series.
            assert published[(metric, stage.prefix)]["dimensions"] == {"model_id": "made-by-an-admin.v2"}
            assert _notifies_both_topics(alarm)
            watched[alarm_id] = (alarm, query)
        # The failed share's average is the failure rate: 1 for the failed task, 0 for the succeeded one.
        assert sorted(published[(observability.TASK_FAILED_SHARE, stage.prefix)]["values"]) == [0.0, 1.0]
        rate, rate_query = watched[FAILURE_RATE_ALARM_ID]
        assert (rate["Threshold"], rate["ComparisonOperator"], rate_query["Period"]) == (
            stage.failure_rate_threshold, "GreaterThanThreshold", 5 * 60)
        assert rate["EvaluationPeriods"] == rate["DatapointsToAlarm"] == stage.failure_rate_windows
        assert rate["TreatMissingData"] == "notBreaching"  # a window without a finished task breaches nothing
        circuit, circuit_query = watched[CIRCUIT_OPEN_ALARM_ID]
        assert (circuit["Threshold"], circuit["ComparisonOperator"], circuit_query["Period"]) == (
            1, "GreaterThanOrEqualToThreshold", 60)
        every_alarm = json.dumps(alarms)
        assert not [model.model_id for model in DEFAULT_MODELS if model.model_id in every_alarm], stage_name


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
