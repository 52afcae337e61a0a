"""Log records reach Lambda's handler: one naming rule for loggers, and nothing silences their warnings."""

from __future__ import annotations

import ast
import importlib
import logging
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import chalicelib

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
