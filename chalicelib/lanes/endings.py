"""How a lane's work on a task ends when Ark does not simply succeed: back to the queue after a backoff, failed
with Ark's code, or given up after the lane's last receive (docs/design.md, "Ark's errors").

Retryable Ark errors (429, 5xx, timeouts) send the task back to `queued` (the transition releases its slot) and
the message back with exponential backoff and jitter (Ark's `Retry-After` wins); on the lane's last receive the
task fails with `upstream_unavailable` (or `upstream_quota_exceeded`) and the message goes to the DLQ. Permanent
errors fail the task with Ark's code. A task whose every call Ark refused before doing any work gets its quota
request back when it fails.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from pynamodb.expressions.update import Action

from chalicelib import catalog, observability
from chalicelib.ark.errors import (
    MODEL_UNAVAILABLE,
    ArkError,
    ArkPermanentError,
    ArkRateLimitError,
    ArkRetryableError,
    counted_status,
    gave_up_error,
    is_model_unavailable,
    task_error,
)
from chalicelib.backoff import compute_backoff
from chalicelib.clock import Clock
from chalicelib.errors import error_object
from chalicelib.lanes.circuit import Breaker
from chalicelib.lanes.messages import Delivery, Outcome, Retry
from chalicelib.metrics import rollup
from chalicelib.resources import Lane
from chalicelib.settings import Settings
from chalicelib.store import statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import TaskRecord
from chalicelib.tasks import costs

log = logging.getLogger(__name__)

# Ark's answers that refuse a call before any work is done: no quota is spent on it here either.
REFUSED_BEFORE_WORK = frozenset({401, 403, 429})


class Endings:
    def __init__(self, lane: Lane, *, settings: Settings, clock: Clock, rng: random.Random,
                 circuit: Breaker) -> None:
        self.lane = lane
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.circuit = circuit

    def observe(self, task: TaskRecord, error: ArkError) -> None:
        """Ark answered the model's call with an error, or none: counted for the admins' metrics and CloudWatch."""
        rollup.count_ark_error(task.model_id, counted_status(error), self.clock.now())
        observability.count_ark_error(task.model_id, error)

    def retry_later(self, task: TaskRecord, delivery: Delivery, error: ArkRetryableError,
                    reached_ark_before: bool) -> Outcome:
        self.observe(task, error)
        self.circuit.failed(task, error)  # counted towards the model's circuit (a probe's failure re-opens it)
        undo_claim = forget_refused_call(task, error, reached_ark_before)
        if delivery.receive_count >= self.lane.max_receives:
            return self.give_up(task, delivery, error, undo_claim)
        self.transition(task, statemachine.QUEUED, undo_claim)
        backoff = compute_backoff(delivery.receive_count - 1, base=self.settings.retry_base_s,
                                  cap=self.settings.retry_max_s, spread=(0.5, 1.0), rng=self.rng)
        return Retry(round(max(error.retry_after or 0, backoff)))

    def give_up(self, task: TaskRecord, delivery: Delivery, error: ArkError, extra: Sequence[Action] = ()) -> Outcome:
        self.fail_with(task, gave_up_error(error, delivery.receive_count), extra)
        return Retry(0)  # the next receive moves it to the DLQ: a record of what gave up

    def fail_permanently(self, task: TaskRecord, error: ArkError, reached_ark_before: bool) -> None:
        self.observe(task, error)
        self.circuit.passed(task)  # Ark answered: a probe closes the circuit
        if is_model_unavailable(error):
            # Every task of the model will meet it: the admin page shows it until a call succeeds or the upstream
            # changes.
            self.fail_with(task, task_error(MODEL_UNAVAILABLE, f"{error.code}: {error.message}"),
                           forget_refused_call(task, error, reached_ark_before))
            catalog.flag_upstream_unavailable(task, error.code, self.clock.now())
            return
        unbilled = forget_refused_call(task, error, reached_ark_before)
        # Refused outright: nothing billed. An unreadable answer may have been billed: its cost stays unknown.
        refused = costs.refused_actions(task, reached_ark_before) if isinstance(error, ArkPermanentError) else []
        self.fail_with(task, task_error(error.code, error.message), [*unbilled, *refused])

    def fail(self, task: TaskRecord, code: str, message: str, extra: Sequence[Action] = ()) -> TaskRecord | None:
        return self.fail_with(task, error_object(code, message), extra)

    def fail_with(self, task: TaskRecord, error: dict[str, Any], extra: Sequence[Action] = ()) -> TaskRecord | None:
        return self.transition(task, statemachine.FAILED, [TaskRecord.error.set(error), *extra])

    def transition(self, task: TaskRecord, target: str, actions: list[Action]) -> TaskRecord | None:
        """The task as written, or None when it changed meanwhile (someone else decided its fate)."""
        try:
            return statemachine.transition(task, target, actions=actions, clock=self.clock)
        except StaleTask:
            log.info("task %s changed before it could become %s", task.task_id, target)
            return None


def forget_refused_call(task: TaskRecord, error: ArkError, reached_ark_before: bool) -> list[Action]:
    """Ark refused this call before doing any work (401/403: the key or account may not call it; 404: nor the model;
    429: a rate limit, or the account's quota used up), so the task counts as having reached Ark only if an earlier
    attempt did: one
    that only ever met refusals gets its quota request back when it ends. Returns the write of `ark_called` for the
    caller's transition (none when Ark did not refuse: the claim's mark stands)."""
    if (error.http_status not in REFUSED_BEFORE_WORK and not isinstance(error, ArkRateLimitError)
            and not is_model_unavailable(error)):
        return []
    task.ark_called = reached_ark_before  # read by the transition's quota refund
    return [TaskRecord.ark_called.set(reached_ark_before)]
