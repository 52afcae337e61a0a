"""What the functions tell CloudWatch and X-Ray: structured logs, per-model metrics, traces (AWS Lambda Powertools).

- Logs: every record, from `logger` or any module's `logging.getLogger(__name__)`, is one JSON line (Powertools'
  formatter, on the Lambda runtime's own handler) carrying `request_id` (API Gateway's for a REST call, the Lambda
  context's otherwise) and `task_id` while a task is handled. `LOG_FORMAT=plain` (the default outside Lambda) leaves
  the root logger's handlers alone: a terminal and the tests keep reading text.
- Metrics: per model (dimension `model_id`), in CloudWatch's embedded metric format, in namespace `<prefix>`:
  `TasksFinished` and `Tasks<Status>` (Count), `WaitSeconds` (accepted -> running) and `RunSeconds` (running ->
  terminal), `Ark429` and `Ark5xx` (Count), `CircuitOpen` (0/1). Recorded in memory off the request path (a state
  machine listener, the lanes' error endings, the circuit breaker) and printed once at the end of each invocation;
  `infra.template` alarms on them.
- Traces: Powertools' Tracer patches the AWS SDK and httpx where the stage turns X-Ray on
  (`POWERTOOLS_TRACE_DISABLED=false`, from `infra.stages.Stage.tracing`); elsewhere there is none.

`instrument(app)` (once, in app.py) registers the middleware that sets the request's keys and flushes the metrics.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.filters import SuppressFilter
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit

from chalicelib.ark.errors import ArkError, counted_status
from chalicelib.clock import epoch_of
from chalicelib.ids import is_task_id
from chalicelib.settings import Settings, get_settings
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE = "arkflow"
TASK_ID = "task_id"
MODEL_DIMENSION = "model_id"
# Metric names, read by the alarms (`infra.template`) too.
TASKS_FINISHED = "TasksFinished"
TASKS_FAILED = "TasksFailed"
# Each finished task's: 1 failed, 0 not. Its average over a window is the model's failure rate.
TASK_FAILED_SHARE = "TaskFailedShare"
WAIT_SECONDS, RUN_SECONDS = "WaitSeconds", "RunSeconds"
ARK_429, ARK_5XX = "Ark429", "Ark5xx"
CIRCUIT_OPEN = "CircuitOpen"


def finished_metric(status: str) -> str:
    """`TasksSucceeded`, `TasksFailed`, `TasksCancelled`, `TasksExpired`."""
    return f"Tasks{status.capitalize()}"


class ReadableFormatter(LambdaPowertoolsFormatter):
    """One line of text per record, with the same request and task keys the JSON lines carry."""

    TEXT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        keys = " ".join(f"{key}={value}" for key, value in self.thread_safe_get_current_keys().items()
                        if value is not None)
        text = self.TEXT.format(record)
        return f"{text} [{keys}]" if keys else text


def _formatter(settings: Settings) -> LambdaPowertoolsFormatter:
    if settings.log_json:
        # `name`: the logger, i.e. the module that logged it (Powertools fills `%(...)s` from the record).
        return LambdaPowertoolsFormatter(service=SERVICE, utc=True, use_rfc3339=True, name="%(name)s")
    return ReadableFormatter()


def _is_pytest_capture(handler: logging.Handler) -> bool:
    """pytest's capturing handlers keep their own format (Powertools leaves them alone too)."""
    return type(handler).__module__ == "_pytest.logging"


# The app's one Logger: its own records go through its handler (Powertools keeps them from reaching the root's
# handlers twice); every other module's records reach the root's handlers, formatted alike (`configure`).
logger = Logger(service=SERVICE, logger_formatter=_formatter(get_settings()))
# The app's one Metrics: no `service` dimension, so each metric is identified by namespace, name and `model_id`.
metrics = Metrics()
# Made where the stage traces: it patches the AWS SDK and httpx (Ark's calls) into X-Ray subsegments of each
# invocation's segment. Elsewhere none, which spares each cold start the X-Ray SDK's import.
tracer = Tracer(service=SERVICE) if get_settings().tracing else None


def configure(settings: Settings | None = None) -> None:
    """Format every log line as `settings` say (again after a change of the environment)."""
    settings = settings or get_settings()
    formatter = _formatter(settings)
    logger.registered_handler.setFormatter(formatter)
    if not settings.log_json:
        return  # a terminal's or the tests' handlers keep their own format
    root = logging.root
    handlers = [handler for handler in root.handlers if not _is_pytest_capture(handler)]
    if not handlers:  # outside Lambda, whose runtime puts its handler on the root
        handler = logging.StreamHandler()
        root.addHandler(handler)
        handlers = [handler]
    for handler in handlers:
        handler.setFormatter(formatter)
        # The app logger's own lines are printed by its handler: not a second time here (as Powertools does for
        # the handlers the root had when `logger` was made).
        if not any(isinstance(existing, SuppressFilter) for existing in handler.filters):
            handler.addFilter(SuppressFilter(SERVICE))


# --- the keys of each line ----------------------------------------------------------------------------------


def current_keys() -> dict[str, Any]:
    return dict(logger.thread_safe_get_current_keys())


def name_task(task_id: str) -> None:
    """The rest of the invocation's lines name `task_id` (a request that creates it)."""
    logger.thread_safe_append_keys(task_id=task_id)


def per_task(items: Iterable[T], task_id_of: Callable[[T], str | None]) -> Iterator[T]:
    """`items` (a batch's records, the due tasks), each one's lines naming its task while the loop handles it: its
    error logged in the loop's own `except` too."""
    before = current_keys().get(TASK_ID)
    try:
        for item in items:
            try:
                task_id = task_id_of(item)
            except (ValueError, KeyError, TypeError, AttributeError):
                task_id = None
            logger.thread_safe_append_keys(task_id=task_id if isinstance(task_id, str) and is_task_id(task_id)
                                           else None)
            yield item
    finally:
        logger.thread_safe_append_keys(task_id=before)


def sqs_task_id(record: dict[str, Any]) -> str | None:
    """The task an SQS record's JSON body names (a lane's message or a webhook delivery's)."""
    body = json.loads(record["body"])
    return body.get("task_id") if isinstance(body, dict) else None


def _request_id(event: Any) -> str | None:
    context = getattr(event, "context", None)
    if isinstance(context, dict):  # a REST request: API Gateway's id of it (`chalice local` makes none)
        return context.get("requestId") or getattr(getattr(event, "lambda_context", None), "aws_request_id", None)
    return getattr(context, "aws_request_id", None)


def _task_of_request(event: Any) -> str | None:
    """The task a REST request names in its path (`/api/tasks/{task_id}...`) or query (Ark's callback)."""
    for params in (getattr(event, "uri_params", None), getattr(event, "query_params", None)):
        # A Mapping: Chalice hands a REST request's query over as a MultiDict, no dict.
        value = params.get(TASK_ID) if isinstance(params, Mapping) else None
        if isinstance(value, str) and is_task_id(value):
            return value
    return None


def middleware(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Around every invocation of every handler: its request (and task) keys, and its metrics flushed at the end."""
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(request_id=_request_id(event), task_id=_task_of_request(event))
    try:
        return get_response(event)
    finally:
        flush_metrics()
        logger.thread_safe_clear_keys()


def instrument(app: Any) -> None:
    """Log formatting for the process, and the middleware on every handler of `app` (REST, SQS, schedules,
    WebSocket)."""
    configure()
    app.register_middleware(middleware, "all")


# --- metrics ------------------------------------------------------------------------------------------------

_lock = threading.Lock()
# model_id -> metric name -> (unit, values), until the invocation's end.
_pending: dict[str, dict[str, tuple[MetricUnit, list[float]]]] = defaultdict(dict)


def _record(model_id: str | None, name: str, unit: MetricUnit, value: float) -> None:
    if not model_id or not get_settings().emf_metrics:
        return
    with _lock:
        _pending[model_id].setdefault(name, (unit, []))[1].append(value)


def _count(model_id: str | None, name: str) -> None:
    _record(model_id, name, MetricUnit.Count, 1)


def on_task_written(task: TaskRecord) -> None:
    """State machine listener: a transition into `running` records its wait, one into a terminal state its outcome
    and run time. (A published change that is no transition has a newer `updated_at` than the stamp it kept.)"""
    try:
        if task.status == statemachine.RUNNING and task.started_at and task.started_at == task.updated_at:
            _record(task.model_id, WAIT_SECONDS, MetricUnit.Seconds,
                    max(0.0, epoch_of(task.started_at) - epoch_of(task.created_at)))
        elif task.status in statemachine.TERMINAL and task.finished_at and task.finished_at == task.updated_at:
            _count(task.model_id, TASKS_FINISHED)
            _count(task.model_id, finished_metric(task.status))
            _record(task.model_id, TASK_FAILED_SHARE, MetricUnit.Count, 1 if task.status == statemachine.FAILED else 0)
            if task.started_at:
                _record(task.model_id, RUN_SECONDS, MetricUnit.Seconds,
                        max(0.0, epoch_of(task.finished_at) - epoch_of(task.started_at)))
    except Exception:  # a metric never stands in the way of the work it counts
        log.debug("task %s not counted", getattr(task, "task_id", None), exc_info=True)


def count_ark_error(model_id: str | None, error: Exception) -> None:
    """Ark refused or failed a call of `model_id`: 429s and 5xx are counted (a call without an answer as a 5xx)."""
    status = counted_status(error) if isinstance(error, ArkError) else None
    if status == 429:
        _count(model_id, ARK_429)
    elif isinstance(status, int) and status >= 500:
        _count(model_id, ARK_5XX)


def emit_circuit_state(model_id: str, open: bool) -> None:
    """The circuit breaker's state of `model_id` as it stands now: 1 open (or half-open), 0 closed."""
    _record(model_id, CIRCUIT_OPEN, MetricUnit.Count, 1 if open else 0)


def flush_metrics() -> None:
    """Print what was recorded, one EMF document per model (and per 100 values of a metric, CloudWatch's most),
    and forget it."""
    with _lock:
        pending = {model_id: dict(values) for model_id, values in _pending.items()}
        _pending.clear()
        metrics.namespace = get_settings().resource_prefix  # the stage's: `infra.template`'s alarms read there
        try:
            for model_id, by_name in pending.items():
                metrics.add_dimension(MODEL_DIMENSION, model_id)
                for name, (unit, values) in by_name.items():
                    for value in values:  # Powertools prints the document itself at a metric's 100th value
                        metrics.add_metric(name=name, unit=unit, value=value)
                if metrics.metric_set:
                    metrics.flush_metrics()
                else:
                    metrics.clear_metrics()  # printed just now: the next model starts from no dimension
        except Exception:  # lost metrics must not fail the invocation that did the work
            metrics.clear_metrics()
            log.warning("metrics not published", exc_info=True)
