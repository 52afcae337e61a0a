"""The scheduled sweeper: nothing stays `running` (or `queued`) forever (docs/design.md, "Leases and deadlines").

Per model (a handful: the models table is read whole), it reads the slot record, whose holders are exactly the
tasks that may be running, and the sparse `queued_by_model` index past the deadline; never a scan of tasks.
  * a holder whose task ended, vanished, or never got claimed before its lease ran out: slot released (a queued
    task, whose handed slot lapsed or whose worker died before its claim, gets a fresh message);
  * free slots of a model with parked tasks: handed to the oldest (a lost hand-off waits at most one sweep);
  * the model's circuit (`chalicelib.lanes.circuit`): a probe that ended without Ark's answer is replaced, and
    tasks waiting on a circuit open past its maximum fail `upstream_unavailable`;
  * a queued task past `task_deadline_s` since creation, the time its model's circuit was open not counted:
    `failed` with `timeout`;
  * a running image whose worker holds a live lease: left alone, whatever its deadline (its call may be billed);
    once the lease ran out, past its deadline `failed` with `timeout`, else back to `queued` with a fresh message;
  * a running video is never queued again (Ark may have it). Past its own deadline (`deadline_at`, from its Ark
    create) Ark's status is read first: Ark's outcome is applied if Ark finished it, a task Ark still queues is
    cancelled there, and only then it fails with `timeout`; one Ark still runs (or that Ark cannot be asked
    about) is looked at again by the next sweep, and failed once a second grace has passed too;
  * a video left `submitting` (the worker died around the create) beyond the create grace: a fresh message, and
    the worker reconciles it through Ark's task list;
  * a video at Ark the poller does not read (scheduled under a shard it no longer queries): scheduled again.
Then, for all models at once, webhook events whose first message may never have been queued (the sparse
`webhooks_due` index, a page per sweep) are queued again (`chalicelib.webhooks.outbox`), every finished task the
metrics have not counted yet is counted, many per transaction (`chalicelib.metrics.rollup`: the figures lag by up to
a sweep), and each model's queue is sampled once per 5 minutes.
A failed write is logged and the sweep goes on with the next task; the next sweep looks again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib import catalog, queues
from chalicelib.clock import SYSTEM_CLOCK, Clock, epoch_of, iso
from chalicelib.errors import error_object
from chalicelib.lanes.circuit import Breaker, waited_on_circuit
from chalicelib.lanes.waits import HANDOFF_LEASE_S, Waker
from chalicelib.metrics import figures, rollup
from chalicelib.settings import Settings
from chalicelib.store import slots, statemachine
from chalicelib.store.errors import StaleTask, WriteFailed
from chalicelib.store.records import ModelRecord, TaskRecord
from chalicelib.store.slots import Holder
from chalicelib.video.stages import CREATE_GRACE_S, SUBMITTING, VIDEO_DEADLINE_GRACE_S, deadline_of
from chalicelib.video.status import ArkView, VideoStatus, polled_elsewhere
from chalicelib.video.submit import take_reconcile_round
from chalicelib.webhooks.events import WebhookEvents

log = logging.getLogger(__name__)

TIMEOUT_ERROR = error_object("timeout", "The task did not finish before its deadline.")
# What one task's trouble may raise; the sweep goes on with the others.
_WRITE_FAILURES = (WriteFailed, PynamoDBException, BotoCoreError, ClientError)


@dataclass
class SweepReport:
    timed_out: int = 0
    leases_reclaimed: int = 0
    requeued: int = 0
    reconciling: int = 0
    woken: int = 0
    webhooks_resent: int = 0
    metrics_applied: int = 0
    metrics_set_aside: int = 0
    circuit_failed: int = 0


class Sweeper:
    def __init__(self, *, sqs: Any, video: VideoStatus, waker: Waker, circuit: Breaker, webhooks: WebhookEvents,
                 settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.sqs = sqs
        self.video = video
        self.waker = waker
        self.circuit = circuit
        self.webhooks = webhooks
        self.settings = settings
        self.clock = clock

    def sweep(self) -> SweepReport:
        report = SweepReport()
        models = catalog.list_models()
        for model in models:
            outages = self._sweep_circuit(model, report)
            self._expire_queued(model, report, outages)
            self._check_holders(model, report)
            self._wake_parked(model, report)
        try:
            report.webhooks_resent += self.webhooks.resend_due()
        except _WRITE_FAILURES as error:
            log.warning("webhook marks left for the next sweep: %s", error)
        rolled = rollup.apply_due()  # never raises: what it could not count waits for the next sweep
        report.metrics_applied += rolled.applied
        report.metrics_set_aside += rolled.set_aside
        try:
            figures.sample_queues(models, self.clock.now())
        except _WRITE_FAILURES as error:
            log.warning("metrics left for the next sweep: %s", error)
        return report

    def _sweep_circuit(self, model: ModelRecord, report: SweepReport) -> list[list[float]]:
        try:
            outages, failed = self.circuit.sweep(model.model_id)
        except _WRITE_FAILURES as error:
            log.warning("circuit of %s left for the next sweep: %s", model.model_id, error)
            return []
        report.circuit_failed += failed
        return outages

    def _wake_parked(self, model: ModelRecord, report: SweepReport) -> None:
        try:
            report.woken += self.waker.wake_free_slots(model.model_id)
        except _WRITE_FAILURES as error:
            log.warning("parked tasks of %s left for the next sweep: %s", model.model_id, error)

    def _time_out(self, task: TaskRecord, report: SweepReport) -> None:
        try:
            statemachine.transition(task, statemachine.FAILED, clock=self.clock,
                                    actions=[TaskRecord.error.set(TIMEOUT_ERROR)])
            report.timed_out += 1
        except StaleTask:
            pass  # it moved on meanwhile; the next sweep looks again if it still needs to

    def _expire_queued(self, model: ModelRecord, report: SweepReport, outages: list[list[float]]) -> None:
        now = self.clock.now()
        cutoff = iso(now - self.settings.task_deadline_s)
        for stale in TaskRecord.queued_by_model.query(model.model_id, TaskRecord.created_key < cutoff):
            created = epoch_of(stale.created_at)
            if now - created - waited_on_circuit(outages, created, now) <= self.settings.task_deadline_s:
                continue  # part of its wait was on its model's open circuit, which uses none of its deadline
            try:
                self._time_out(stale, report)
            except _WRITE_FAILURES as error:
                log.warning("could not time out task %s: %s", stale.task_id, error)

    def _check_holders(self, model: ModelRecord, report: SweepReport) -> None:
        now = self.clock.now()
        for task_id, holder in slots.holders(model.model_id).items():
            try:
                self._check_holder(model, task_id, holder, now, report)
            except StaleTask:
                continue  # it moved on while being looked at (a poll, a callback): nothing left to do here
            except _WRITE_FAILURES as error:
                log.warning("sweep of task %s left for the next run: %s", task_id, error)

    def _check_holder(self, model: ModelRecord, task_id: str, holder: Holder, now: float,
                      report: SweepReport) -> None:
        try:
            task = TaskRecord.get(task_id, consistent_read=True)
        except DoesNotExist:
            if slots.release(model.model_id, task_id, holder.user_id):
                report.leases_reclaimed += 1
            return
        if task.status == statemachine.QUEUED and task.slot_handed_at is not None:
            if now - float(task.slot_handed_at) > HANDOFF_LEASE_S and self.waker.take_back(task):
                # Handed a slot but never claimed it (its message lost, the waker dead before sending it): the task
                # is parked again and the slot handed on to the oldest parked task (its message sent then).
                report.leases_reclaimed += 1
            return
        if task.status != statemachine.RUNNING:
            # Ended (its release was lost), or acquired by a worker that died before claiming it.
            stale = task.status in statemachine.TERMINAL or holder.lease_until < now
            if stale and slots.release(model.model_id, task_id, task.user_id):
                report.leases_reclaimed += 1
                if task.status == statemachine.QUEUED:
                    # A worker that died before its claim: one message more, so it is not stranded.
                    queues.enqueue(self.sqs, task.lane, task.task_id)
            return
        if task.type == "video":
            self._check_video(task, now, report)
        elif holder.lease_until >= now:
            return  # its worker is inside its Ark call: nothing ends it under it
        elif deadline_of(task, self.settings) < now:
            self._time_out(task, report)
        else:
            self._requeue_abandoned(task, report)

    def _check_video(self, task: TaskRecord, now: float, report: SweepReport) -> None:
        deadline = deadline_of(task, self.settings)
        if task.stage == SUBMITTING:
            idle = now - epoch_of(task.updated_at)
            if idle < CREATE_GRACE_S:
                return  # a worker may be inside its create (or a reconcile round)
            if deadline < now:
                self._time_out(task, report)
            elif idle > 2 * CREATE_GRACE_S:
                self._request_reconcile(task, report)
            return
        if not task.external_id:
            return
        if polled_elsewhere(task):
            task = self.video.schedule_polls(task)  # scheduled before the poller's index had one partition
        if deadline >= now:
            return
        view, task = self.video.stop_at_ark(task)
        if view == ArkView.FINISHED:
            return  # Ark's outcome is applied: the billed video is kept
        if view in (ArkView.RUNNING, ArkView.UNREACHABLE) and now <= deadline + VIDEO_DEADLINE_GRACE_S:
            return  # Ark should end it itself (it is past Ark's own expiry): the next sweep reads it again
        self._time_out(task, report)

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
        """An image's worker died mid-call: free its slot and queue it again (Ark never said it succeeded)."""
        try:
            statemachine.transition(task, statemachine.QUEUED, clock=self.clock)
        except StaleTask:
            return
        log.warning("task %s lost its worker mid-call; queued again", task.task_id)
        queues.enqueue(self.sqs, task.lane, task.task_id)
        report.leases_reclaimed += 1
        report.requeued += 1
