"""The scheduled sweeper: nothing stays `running` (or `queued`) forever.

Per model (a handful: the models table is read whole), it reads the slot record, whose holders are exactly the
tasks that may be running, and the sparse `queued_by_model` index past the deadline; never a scan of tasks.
  * a holder whose task ended, vanished, or never got claimed before its lease ran out: slot released;
  * a task past `task_deadline_s` since creation: `failed` with `timeout` (a video Ark still queues is dropped);
  * an image whose worker died mid-call (lease expired): back to `queued` with a fresh message;
  * a video left `submitting` (the worker died around the create): a fresh message, and the worker reconciles
    it through Ark's task list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist

from chalicelib import catalog, queues, slots, statemachine
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import ModelRecord, TaskRecord
from chalicelib.lanes import CREATE_GRACE_S, take_reconcile_round
from chalicelib.settings import Settings, get_settings
from chalicelib.statemachine import StaleTask
from chalicelib.video import SUBMITTING, VideoService, epoch_of, queued_at_ark

log = logging.getLogger(__name__)

TIMEOUT_ERROR = {"code": "timeout", "message": "The task did not finish before its deadline."}


@dataclass
class SweepReport:
    timed_out: int = 0
    leases_reclaimed: int = 0
    requeued: int = 0
    reconciling: int = 0


class Sweeper:
    def __init__(self, *, sqs: Any, video: VideoService, settings: Settings | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.sqs = sqs
        self.video = video
        self.settings = settings or get_settings()
        self.clock = clock

    def sweep(self) -> SweepReport:
        report = SweepReport()
        for model in catalog.list_models():
            self._expire_queued(model, report)
            self._check_holders(model, report)
        return report

    def _past_deadline(self, task: TaskRecord, now: float) -> bool:
        return epoch_of(task.created_at) + self.settings.task_deadline_s < now

    def _time_out(self, task: TaskRecord, report: SweepReport) -> None:
        if queued_at_ark(task):
            self.video.cancel_quietly(task.external_id)
        try:
            statemachine.transition(task, statemachine.FAILED, clock=self.clock,
                                    actions=[TaskRecord.error.set(TIMEOUT_ERROR)])
            report.timed_out += 1
        except StaleTask:
            pass  # it moved on meanwhile; the next sweep looks again if it still needs to

    def _expire_queued(self, model: ModelRecord, report: SweepReport) -> None:
        cutoff = iso(self.clock.now() - self.settings.task_deadline_s)
        for stale in TaskRecord.queued_by_model.query(model.model_id, TaskRecord.created_key < cutoff):
            self._time_out(stale, report)

    def _check_holders(self, model: ModelRecord, report: SweepReport) -> None:
        now = self.clock.now()
        for task_id, holder in slots.holders(model.model_id).items():
            try:
                task = TaskRecord.get(task_id, consistent_read=True)
            except DoesNotExist:
                if slots.release(model.model_id, task_id, holder.user_id):
                    report.leases_reclaimed += 1
                continue
            if task.status != statemachine.RUNNING:
                # Ended (its release was lost), or acquired by a worker that died before claiming it.
                stale = task.status in statemachine.TERMINAL or holder.lease_until < now
                if stale and slots.release(model.model_id, task_id, task.user_id):
                    report.leases_reclaimed += 1
                continue
            if self._past_deadline(task, now):
                self._time_out(task, report)
            elif holder.lease_until < now:
                self._requeue_abandoned(task, report)
            elif task.stage == SUBMITTING and now - epoch_of(task.updated_at) > 2 * CREATE_GRACE_S:
                self._request_reconcile(task, report)

    def _request_reconcile(self, task: TaskRecord, report: SweepReport) -> None:
        """A video left `submitting` that no worker touched for a while: one fresh message to reconcile it.

        Taking a reconcile round first means an overlapping sweep sends nothing, and a worker still holding an
        older message stops at its own claim. `updated_at` stays, so the worker does not wait the grace again.
        """
        try:
            take_reconcile_round(task, restart_grace_at=None)
        except StaleTask:
            return
        queues.enqueue(self.sqs, task.lane, task.task_id)
        report.reconciling += 1

    def _requeue_abandoned(self, task: TaskRecord, report: SweepReport) -> None:
        """A worker died mid-call: free its slot and queue the task again (Ark never said it succeeded)."""
        try:
            statemachine.transition(task, statemachine.QUEUED, clock=self.clock)
        except StaleTask:
            return
        log.warning("task %s lost its worker mid-call; queued again", task.task_id)
        queues.enqueue(self.sqs, task.lane, task.task_id)
        report.leases_reclaimed += 1
        report.requeued += 1
