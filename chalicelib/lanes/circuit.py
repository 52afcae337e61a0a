"""The per-model circuit breaker: when Ark keeps refusing or failing a model's calls, its lanes stop sending them
until a probe call finds Ark answering again (docs/design.md, "Circuit breaker").

The circuit lives on the model's slot record, beside the limits every acquire already checks: an acquire's
condition is that the circuit is closed, so a lane learns it is open from the refusal it gets anyway (DynamoDB
returns the record), with no read more per task. A task refused by an open circuit is parked like one refused for
want of a slot (its message acknowledged: no receive used, no slot held, nothing polled), on the condition that
the circuit is still open, so a close in between makes it acquire again.

  * closed -> open: `CIRCUIT_THRESHOLD` retryable Ark failures (429, 5xx, timeouts) counted within a window of
    `CIRCUIT_WINDOW_SECONDS` from the first of them;
  * open -> half_open: from `CIRCUIT_COOLDOWN_SECONDS` after it opened, one acquire (a new task's, a retry's) or
    the sweeper's hand-off to the oldest parked task elects its task the probe, in the conditional write that
    takes its slot (`chalicelib.store.slots`): of two workers only one can win;
  * half_open -> closed: Ark answers the probe (a success, or an answer that fails the task for good: Ark is
    reachable); the free slots go to parked tasks at once;
  * half_open -> open: the probe met a retryable failure (or ended without a call: the sweeper elects another);
  * an admin closes it by hand (`POST /api/admin/models/{id}/circuit/close`).
Tasks waiting on a circuit that has not closed for `CIRCUIT_MAX_OPEN_SECONDS` fail `upstream_unavailable` with
their quota back (the sweeper); time spent waiting on it does not count towards a queued task's deadline.

`upstream_unavailable` on the model (`chalicelib.catalog`) is another matter: Ark said the model is not there for
this account, a permanent answer that fails tasks; the circuit is for transient trouble, which tasks wait out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import DoesNotExist, PynamoDBException, UpdateError

from chalicelib.ark.errors import UPSTREAM_UNAVAILABLE, ArkError
from chalicelib.clock import Clock, iso
from chalicelib.errors import error_object
from chalicelib.lanes.waits import HANDOFF_LEASE_S, Waker
from chalicelib.settings import Settings
from chalicelib.store import statemachine, writes
from chalicelib.store.errors import StaleTask, WriteFailed
from chalicelib.store.records import ModelRecord, SlotRecord, TaskRecord
from chalicelib.store.slots import CIRCUIT_HALF_OPEN, CIRCUIT_OPEN

log = logging.getLogger(__name__)

CLOSED = "closed"
# Outages a model's record remembers (for queued tasks' deadlines): the most recent, none older than a deadline.
MAX_OUTAGES = 20
_FAILURES = (PynamoDBException, BotoCoreError, ClientError, WriteFailed)

Announce = Callable[[str, dict[str, Any]], None]


def circuit_of(model: ModelRecord, record: SlotRecord | None = None) -> dict[str, Any]:
    """`{"state": "closed"|"open"|"half_open", "since": iso | None, "reason": str | None}` of the model (its slot
    record as read by the caller, or read here)."""
    if record is None:
        try:
            record = SlotRecord.get(model.model_id, consistent_read=True)
        except DoesNotExist:
            return {"state": CLOSED, "since": None, "reason": None}
    return _body(record)


def _body(record: SlotRecord) -> dict[str, Any]:
    since = record.circuit_since
    return {"state": record.circuit or CLOSED, "since": iso(float(since)) if since is not None else None,
            "reason": record.circuit_reason}


def waited_on_circuit(outages: list[list[float]], since: float, now: float) -> float:
    """Seconds of [since, now] the model's circuit was not closed."""
    return sum(max(0.0, min(end, now) - max(start, since)) for start, end in outages)


class Breaker:
    """Counts a model's Ark failures, opens and closes its circuit, and (the sweeper) ends the wait of tasks on
    one that stays open. `announce(model_id, circuit)` tells admins of each change."""

    def __init__(self, *, settings: Settings, clock: Clock, waker: Waker, announce: Announce | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.waker = waker
        self.announce = announce

    # --- the lanes' calls ---------------------------------------------------------------------------------------

    def failed(self, task: TaskRecord, error: ArkError) -> None:
        """A call of `task` met a retryable failure: counted; the threshold opens the circuit, and a probe's
        failure re-opens it. Best effort: the task's own retry is what counts."""
        try:
            self._failed(task, error)
        except _FAILURES as problem:
            log.warning("circuit of %s not updated after a failure: %s", task.model_id, problem)

    def _failed(self, task: TaskRecord, error: ArkError) -> None:
        now = self.clock.now()
        reason = f"{_named(error)} answered a probe call"
        if task.circuit_probe and self._write(task.model_id, _reopen_actions(now, self.settings, reason),
                                             SlotRecord.circuit_probe == task.task_id):
            return
        record = self._count_failure(task.model_id, now)
        if int(record.ark_failures or 0) < self.settings.circuit_threshold or record.circuit is not None:
            return
        reason = (f"{int(record.ark_failures)} Ark failures within {self.settings.circuit_window_s} s; the last: "
                  f"{_named(error)}")
        self._write(task.model_id, [SlotRecord.circuit.set(CIRCUIT_OPEN), SlotRecord.circuit_since.set(now),
                                    SlotRecord.circuit_opened_at.set(now), SlotRecord.circuit_reason.set(reason),
                                    SlotRecord.circuit_retry_at.set(now + self.settings.circuit_cooldown_s),
                                    SlotRecord.circuit_probe.remove()], SlotRecord.circuit.does_not_exist())

    def _count_failure(self, model_id: str, now: float) -> SlotRecord:
        """One more failure in the current window, or the first of a new one; the record as written."""
        record = SlotRecord(model_id)
        window_start = now - self.settings.circuit_window_s
        for condition, actions in (
                (SlotRecord.ark_failures_since >= window_start, [SlotRecord.ark_failures.add(1)]),
                (SlotRecord.ark_failures_since.does_not_exist() | (SlotRecord.ark_failures_since < window_start),
                 [SlotRecord.ark_failures.set(1), SlotRecord.ark_failures_since.set(now)])):
            try:
                record.update(actions=actions, condition=condition)
                return record
            except UpdateError as error:
                if not writes.condition_failed(error):
                    raise
        record.update(actions=[SlotRecord.ark_failures.add(1)])  # a window began meanwhile: counted in it
        return record

    def passed(self, task: TaskRecord) -> None:
        """Ark answered a call of `task`: if it was the probe, the circuit closes and its free slots go to parked
        tasks. Costs nothing for any other task."""
        if not task.circuit_probe:
            return
        try:
            self._close(task.model_id, "Ark answered the probe call", SlotRecord.circuit_probe == task.task_id)
        except _FAILURES as problem:
            log.warning("circuit of %s not closed after its probe: %s", task.model_id, problem)

    # --- by hand ------------------------------------------------------------------------------------------------

    def close(self, model_id: str, reason: str = "closed by an admin") -> tuple[dict[str, Any], dict[str, Any]]:
        """Close the model's circuit (nothing changes if it is closed); its circuit before and after."""
        before = self._close(model_id, reason, None)
        try:
            after = _body(SlotRecord.get(model_id, consistent_read=True))
        except DoesNotExist:
            after = {"state": CLOSED, "since": None, "reason": None}
        return before, after

    def _close(self, model_id: str, reason: str, condition: Any) -> dict[str, Any]:
        """Close it (with `condition`, else while it is as read: read again if it changed meanwhile); the circuit
        as it was before."""
        for _ in range(3):
            try:
                record = SlotRecord.get(model_id, consistent_read=True)
            except DoesNotExist:
                return {"state": CLOSED, "since": None, "reason": None}
            before = _body(record)
            if record.circuit is None or self._close_read(record, reason, condition) or condition is not None:
                return before
        return before

    def _close_read(self, record: SlotRecord, reason: str, condition: Any) -> bool:
        """Close the circuit `record` shows, its outage remembered; True when this write closed it."""
        model_id = record.model_id
        now = self.clock.now()
        opened = float(record.circuit_opened_at or record.circuit_since or now)
        kept = [span for span in record.circuit_outages or [] if span[1] >= now - self.settings.task_deadline_s]
        outages = [*kept, [opened, now]][-MAX_OUTAGES:]
        closed = self._write(model_id, [
            SlotRecord.circuit.remove(), SlotRecord.circuit_probe.remove(), SlotRecord.circuit_retry_at.remove(),
            SlotRecord.circuit_opened_at.remove(), SlotRecord.ark_failures.remove(),
            SlotRecord.ark_failures_since.remove(), SlotRecord.circuit_since.set(now),
            SlotRecord.circuit_reason.set(reason), SlotRecord.circuit_outages.set(outages)],
            condition if condition is not None else SlotRecord.circuit_since == record.circuit_since)
        if closed:
            self.waker.after_limits_changed(model_id)  # every free slot to a parked task, now
        return closed

    # --- the sweeper's part -------------------------------------------------------------------------------------

    def sweep(self, model_id: str) -> tuple[list[list[float]], int]:
        """Per model, each sweep: a half-open circuit whose probe ended without an answer goes back to open (the
        next hand-off elects another probe); tasks waiting on one that stayed open past the maximum fail
        `upstream_unavailable` with their quota back. Returns the model's outages (the current one up to now)
        and how many tasks it failed."""
        try:
            record = SlotRecord.get(model_id, consistent_read=True)
        except DoesNotExist:
            return [], 0
        outages = [list(map(float, span)) for span in record.circuit_outages or []]
        if record.circuit is None:
            return outages, 0
        now = self.clock.now()
        opened = float(record.circuit_opened_at or record.circuit_since or now)
        outages.append([opened, now])
        holders = record.holders.as_dict() if record.holders is not None else {}
        if (record.circuit == CIRCUIT_HALF_OPEN and record.circuit_probe not in holders
                and now - float(record.circuit_since or 0) > HANDOFF_LEASE_S):
            self._write(model_id, _reopen_actions(now, self.settings, "the probe ended without Ark's answer",
                                                  cooldown_s=0), SlotRecord.circuit_probe == record.circuit_probe)
        failed = 0
        if now - opened > self.settings.circuit_max_open_s:
            failed = self._fail_waiting(model_id, now - opened)
        return outages, failed

    def _fail_waiting(self, model_id: str, open_s: float) -> int:
        error = error_object(UPSTREAM_UNAVAILABLE, f"The model's provider stayed unavailable for {int(open_s)} s; "
                                                   "try again later.")
        failed = 0
        for task in TaskRecord.queued_by_model.query(model_id):
            if task.slot_handed_at is not None:
                continue  # it holds a slot (the probe): its call decides
            task.ark_called = False  # its quota request is given back
            try:
                statemachine.transition(task, statemachine.FAILED, clock=self.clock, actions=[
                    TaskRecord.error.set(error), TaskRecord.ark_called.set(False)])
                failed += 1
            except StaleTask:
                continue  # it moved on meanwhile
            except _FAILURES as problem:
                log.warning("could not fail task %s waiting on the circuit: %s", task.task_id, problem)
        return failed

    # --- writes -------------------------------------------------------------------------------------------------

    def _write(self, model_id: str, actions: list[Any], condition: Any) -> bool:
        """One conditional update of the model's circuit; True when it was made (and admins are told)."""
        record = SlotRecord(model_id)
        try:
            record.update(actions=actions, condition=condition)
        except UpdateError as error:
            if writes.condition_failed(error):
                return False
            raise
        log.warning("circuit of model %s is %s: %s", model_id, record.circuit or CLOSED, record.circuit_reason)
        if self.announce is not None:
            try:
                self.announce(model_id, _body(record))
            except Exception:  # a push never undoes the change
                log.exception("could not announce the circuit of %s", model_id)
        return True


def _reopen_actions(now: float, settings: Settings, reason: str, cooldown_s: float | None = None) -> list[Any]:
    cooldown = settings.circuit_cooldown_s if cooldown_s is None else cooldown_s
    return [SlotRecord.circuit.set(CIRCUIT_OPEN), SlotRecord.circuit_since.set(now),
            SlotRecord.circuit_reason.set(reason), SlotRecord.circuit_retry_at.set(now + cooldown),
            SlotRecord.circuit_probe.remove()]


def _named(error: ArkError) -> str:
    status = f"HTTP {error.http_status} " if error.http_status is not None else ""
    return f"{status}{error.code}"

