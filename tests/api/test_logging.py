"""Log records reach Lambda's handler: one naming rule for loggers, and nothing silences their warnings."""

from __future__ import annotations

import ast
import importlib
import io
import json
import logging
import os
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import chalicelib
from chalicelib import aws, queues
from chalicelib.resources import lane_named
from chalicelib.settings import reload_settings
from chalicelib.store.records import TaskRecord
from tests.api_client import Api
from tests.conftest import reconfigure
from tests.dynamodb_faults import DynamoFaults, internal_server_error, on_table
from tests.factories import DEMO, IMAGE_TASK

IMAGE_LANE = lane_named("image")

REPO = Path(__file__).resolve().parents[2]
DEPLOYED = [REPO / "app.py", *sorted((REPO / "chalicelib").rglob("*.py"))]


def logger_names(path: Path) -> list[str]:
    """The argument of every `logging.getLogger(...)` call in the file, as source text."""
    calls = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"]
    return [ast.unparse(call.args[0]) if call.args else "" for call in calls]


def test_every_deployed_module_logs_under_its_own_module_name() -> None:
    names = {str(path.relative_to(REPO)): logger_names(path) for path in DEPLOYED}
    assert {path: found for path, found in names.items() if set(found) - {"__name__"}} == {}


def module_loggers() -> list[logging.Logger]:
    """The module-level logger of every chalicelib module that has one."""
    found = []
    for info in pkgutil.walk_packages(chalicelib.__path__, "chalicelib."):
        module = importlib.import_module(info.name)
        found += [value for value in vars(module).values() if isinstance(value, logging.Logger)]
    return found


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lambda_handler() -> Iterator[Collect]:
    """What Lambda's Python runtime does: its handler on the root logger, the root at WARNING."""
    root = logging.getLogger()
    handler, level = Collect(), root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_warning_from_each_module_that_logs_reaches_lambdas_handler(lambda_handler: Collect) -> None:
    import app  # noqa: F401  (creating the Chalice app is what silenced the `arkflow` loggers)

    loggers = module_loggers()
    assert len(loggers) >= 8  # api, ark.client, lanes, results, statemachine, sweeper, video, ws
    for logger in loggers:
        logger.warning("probe from %s", logger.name)

    reached = {record.name for record in lambda_handler.records if record.getMessage().startswith("probe")}
    assert reached == {logger.name for logger in loggers}


def test_chalices_own_error_log_reaches_lambdas_handler(lambda_handler: Collect) -> None:
    from app import app

    app.log.error("probe from the app")

    assert [record.getMessage() for record in lambda_handler.records] == ["probe from the app"]


# --- on AWS: JSON lines naming the request and the task (chalicelib.observability) -------------------------------


@pytest.fixture
def ark_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Ark key the containers are built with and never use (no test here reaches Ark)."""
    monkeypatch.setenv("ARK_API_KEY", "never-called")
    reconfigure()


class FakeLambdaContext:
    aws_request_id = "8f0c5f8e-lambda-request"
    function_name = "arkflow-prod-lane_image"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000  # as a lane's invocation that just began


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """`LOG_FORMAT=json`, as every function's environment sets it, with a stand-in for the Lambda runtime's handler
    on the root at INFO; yields what it wrote, line by line, parsed (a line that is no JSON fails the parse)."""
    from chalicelib import observability

    stream = io.StringIO()
    handler, root = logging.StreamHandler(stream), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    monkeypatch.setenv("LOG_FORMAT", "json")
    observability.configure(reload_settings())
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)
    monkeypatch.delenv("LOG_FORMAT")
    observability.configure(reload_settings())


def test_a_lane_handlers_lines_are_json_naming_its_task_and_lambdas_request(
    api: Api, ark_key: None, json_lines: Callable[[], list[dict[str, Any]]], dynamodb_faults: DynamoFaults
) -> None:
    from app import app

    created = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO)
    assert created.status_code == 201, created.body
    task_id = created.data["id"]
    messages = aws.sqs().receive_message(QueueUrl=queues.queue_url(aws.sqs(), "image"), MaxNumberOfMessages=1,
                                         AttributeNames=["All"], WaitTimeSeconds=0)["Messages"]
    records = [{"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"], "attributes": message["Attributes"], "eventSource": "aws:sqs"}
               for message in messages]
    # An unreadable message beside it: its line names no task, and the next message's names its own again.
    records.insert(0, {**records[0], "messageId": "garbled", "body": '{"task_id": ["not", "an", "id"]'})
    for operation in ("GetItem", "UpdateItem", "TransactWriteItems"):  # DynamoDB down: the worker logs why
        dynamodb_faults.add(operation, internal_server_error(), times=50)

    before = len(json_lines())

    answer = app.handler_map[IMAGE_LANE.handler_name]({"Records": records}, FakeLambdaContext())

    assert answer == {"batchItemFailures": [{"itemIdentifier": "garbled"},
                                            {"itemIdentifier": records[1]["messageId"]}]}
    lines = [line for line in json_lines()[before:] if line["name"].startswith("chalicelib.")]  # not botocore's
    garbled, *lines = lines
    assert garbled["message"].startswith("unreadable message garbled") and "task_id" not in garbled
    assert garbled["request_id"] == FakeLambdaContext.aws_request_id
    failed = [line for line in lines if line["message"].startswith(f"task {task_id} failed in lane image")]
    assert failed and failed[0]["level"] == "ERROR" and "exception" in failed[0]
    for line in lines:
        assert line["task_id"] == task_id and line["request_id"] == FakeLambdaContext.aws_request_id, line
        assert line["service"] == "arkflow"


def test_a_rest_requests_lines_name_its_request_and_the_task_of_its_path_and_no_later_line_does(
    api: Api, ark_key: None, json_lines: Callable[[], list[dict[str, Any]]], dynamodb_faults: DynamoFaults
) -> None:
    task_id = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).data["id"]
    dynamodb_faults.add("GetItem", internal_server_error(), times=50, when=on_table("tasks"))

    answer = api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO)

    assert answer.status_code == 503
    [line] = [line for line in json_lines() if line["level"] == "WARNING"]
    assert line["task_id"] == task_id and line["request_id"], line
    assert line["name"] == "chalicelib.api.http"
    written = json.dumps(json_lines())
    assert api.token(DEMO) not in written and DEMO[1] not in written  # no secret in any line

    logging.getLogger("chalicelib.probe").warning("between invocations")  # the request's keys went with it
    last = json_lines()[-1]
    assert last["message"] == "between invocations" and "task_id" not in last and "request_id" not in last


def test_emf_documents_carry_the_model_dimension_and_the_metric_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chalicelib import observability
    from chalicelib.ark.errors import ArkRateLimitError, ArkServerError, ArkTransportError

    monkeypatch.setenv("EMF_METRICS", "1")
    reload_settings()
    try:
        at = "2026-01-01T00:00:%02d.000Z"
        observability.on_task_written(TaskRecord("tsk_a", model_id="m-a", status="running", created_at=at % 0,
                                                 started_at=at % 4, updated_at=at % 4))
        observability.on_task_written(TaskRecord("tsk_a", model_id="m-a", status="succeeded", created_at=at % 0,
                                                 started_at=at % 4, updated_at=at % 9, finished_at=at % 9))
        # A later published change of a finished task (its `updated_at` moved on) is no second ending.
        observability.on_task_written(TaskRecord("tsk_a", model_id="m-a", status="succeeded", created_at=at % 0,
                                                 started_at=at % 4, updated_at=at % 12, finished_at=at % 9))
        observability.on_task_written(TaskRecord("tsk_b", model_id="m-b", status="failed", created_at=at % 0,
                                                 updated_at=at % 3, finished_at=at % 3))
        observability.count_ark_error("m-b", ArkRateLimitError("RateLimitExceeded", "slow down", 429))
        observability.count_ark_error("m-b", ArkServerError("InternalServiceError", "oops", 503))
        observability.count_ark_error("m-b", ArkTransportError("RequestTimeout", "no answer"))  # as a 5xx
        observability.emit_circuit_state("m-b", True)
        observability.flush_metrics()
        documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        for second in range(200):  # a busy poller's invocation: CloudWatch takes 100 values a metric per document
            observability.on_task_written(TaskRecord(f"tsk_{second}", model_id="m-c", status="running",
                                                     created_at=at % 0, started_at=at % 1, updated_at=at % 1))
        observability.flush_metrics()
        busy = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [len(document["WaitSeconds"]) for document in busy] == [100, 100]
        assert [document["model_id"] for document in busy] == ["m-c", "m-c"]
        observability.flush_metrics()  # flushed once: nothing is printed twice
        assert capsys.readouterr().out == ""
    finally:
        monkeypatch.delenv("EMF_METRICS")
        reload_settings()

    by_model = {}
    for document in documents:
        [directive] = document["_aws"]["CloudWatchMetrics"]
        assert directive["Dimensions"] == [["model_id"]]
        assert directive["Namespace"] == os.environ["ARKFLOW_PREFIX"]
        by_model[document["model_id"]] = {metric["Name"]: document[metric["Name"]] for metric in
                                          directive["Metrics"]}
    assert by_model == {
        "m-a": {"WaitSeconds": [4.0], "TasksFinished": [1.0], "TasksSucceeded": [1.0], "TaskFailedShare": [0.0],
                "RunSeconds": [5.0]},
        "m-b": {"TasksFinished": [1.0], "TasksFailed": [1.0], "TaskFailedShare": [1.0], "Ark429": [1.0],
                "Ark5xx": [1.0, 1.0], "CircuitOpen": [1.0]},
    }


def test_a_route_that_ends_a_task_flushes_its_metrics_at_the_end_of_the_request(
    api: Api, ark_key: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMF_METRICS", "1")
    reload_settings()
    try:
        task_id = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).data["id"]
        assert api.request("POST", f"/api/tasks/{task_id}/cancel", as_user=DEMO).status_code == 200
        printed = capsys.readouterr().out.splitlines()
    finally:
        monkeypatch.delenv("EMF_METRICS")
        reload_settings()
    [document] = [json.loads(line) for line in printed if line.startswith('{"_aws"')]
    assert document["model_id"] == IMAGE_TASK["model_id"]
    assert (document["TasksFinished"], document["TasksCancelled"]) == ([1.0], [1.0])
