"""Invoking the app's non-HTTP Lambda handlers locally, with Lambda-shaped events and contexts."""

from __future__ import annotations

from typing import Any

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import LambdaContext

ACCOUNT_ID = "123456789012"
_DEFAULT_TIMEOUT_S = 60
_DEFAULT_MEMORY_MB = 128


def invoke(app: Chalice, config: Config | None, stage: str, function_name: str, event: dict[str, Any]) -> Any:
    """Call the handler Chalice registered as `function_name`, as Lambda would; returns what it returns."""
    scoped = config.scope(stage, function_name) if config is not None else None
    timeout_s = (scoped.lambda_timeout if scoped else None) or _DEFAULT_TIMEOUT_S
    memory_mb = (scoped.lambda_memory_size if scoped else None) or _DEFAULT_MEMORY_MB
    context = LambdaContext(function_name, memory_mb, max_runtime_ms=timeout_s * 1000)
    return app.handler_map[function_name](event, context)
