"""EventBridge schedules, locally: every `@app.schedule` handler runs every few seconds, whatever its rate.

Runs of one handler never overlap; a raising handler is logged and runs again at the next tick.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chalice.app import Chalice, ScheduledEventConfig
from chalice.config import Config

from devstack.lambdas import ACCOUNT_ID, invoke

logger = logging.getLogger(__name__)


def scheduled_function_names(app: Chalice) -> list[str]:
    return [source.name for source in app.event_sources if isinstance(source, ScheduledEventConfig)]


def scheduled_event(function_name: str, region: str) -> dict[str, Any]:
    """What EventBridge sends a scheduled Lambda."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT_ID}:rule/{function_name}"],
        "detail": {},
    }


@contextmanager
def scheduling(
    app: Chalice, config: Config | None, stage: str, interval_s: float, region: str, stop_grace_s: float = 10.0
) -> Iterator[None]:
    """Run each scheduled handler every `interval_s` seconds (first run at once) until the block exits.

    On exit a run still going gets `stop_grace_s` to finish.
    """
    stopping = threading.Event()

    def run_every_interval(function_name: str) -> None:
        while not stopping.is_set():
            try:
                invoke(app, config, stage, function_name, scheduled_event(function_name, region))
            except Exception:
                logger.exception("scheduled %s raised", function_name)
            stopping.wait(interval_s)

    runners = [
        threading.Thread(target=run_every_interval, args=(name,), name=f"schedule-{name}", daemon=True)
        for name in scheduled_function_names(app)
    ]
    for runner in runners:
        runner.start()
    try:
        yield
    finally:
        stopping.set()
        deadline = time.monotonic() + stop_grace_s
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()))
