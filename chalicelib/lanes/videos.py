"""The video branch of a lane: a claimed video is created at Ark once; one left `submitting` by a crash (or a
create that got no answer) is reconciled through Ark's task list before anything is created again
(`chalicelib.video.submit`)."""

from __future__ import annotations

import contextlib
import logging

from chalicelib import catalog
from chalicelib.ark.errors import NO_USABLE_ANSWER, ArkError, ArkPermanentError, ArkRateLimitError
from chalicelib.clock import Clock
from chalicelib.lanes.endings import Endings
from chalicelib.lanes.messages import DONE, Delivery, Outcome, Retry
from chalicelib.resources import Lane
from chalicelib.store import statemachine
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import ModelRecord, TaskRecord
from chalicelib.video.stages import CREATE_GRACE_S, SUBMITTING
from chalicelib.video.submit import ArkTaskTaken, VideoSubmitter, same_create_attempt, take_reconcile_round

log = logging.getLogger(__name__)

RECONCILE_AMBIGUOUS = "reconcile_ambiguous"


class VideoCalls:
    def __init__(self, lane: Lane, *, submitter: VideoSubmitter, endings: Endings, clock: Clock) -> None:
        self.lane = lane
        self.submitter = submitter
        self.endings = endings
        self.clock = clock

    def submit(self, task: TaskRecord, callback_url: str | None, delivery: Delivery,
               reached_ark_before: bool = True, model: ModelRecord | None = None) -> Outcome:
        try:
            external_id = self.submitter.create(task, callback_url)
        except ArkRateLimitError as error:  # refused outright: nothing was created
            return self.endings.retry_later(task, delivery, error, reached_ark_before)
        except NO_USABLE_ANSWER as error:
            # No usable answer: Ark may have created it. Reconcile through its list before any new create.
            log.warning("video create for %s ended without an answer (%s); reconciling later", task.task_id,
                        error.code)
            self.endings.observe(task, error)
            self.endings.circuit.failed(task, error)
            return self.reconcile_later(task, delivery, error)
        except ArkPermanentError as error:
            self.endings.fail_permanently(task, error, reached_ark_before)
            return DONE
        catalog.clear_upstream_unavailable(model)  # Ark took the create: the model is reachable
        self.endings.circuit.passed(task)  # a probe's create closes the model's circuit
        # StaleTask: it ended meanwhile (the Ark task, nobody's, was dropped if still queued). Any other failure
        # to record it raises: the message comes back and the reconcile finds this Ark task again.
        with contextlib.suppress(StaleTask):
            self.submitter.record_submitted(task, external_id)
        return DONE

    def reconcile(self, task: TaskRecord, delivery: Delivery) -> Outcome:
        """After a crash in `submitting`: adopt the Ark task if Ark accepted one, else create (once) now.

        Each look claims a round first (`create_attempt`, which also restarts the grace): of two deliveries
        reconciling at once (a redelivery and the sweeper's message), one goes on and the other stops here.
        """
        try:
            task = take_reconcile_round(task, restart_grace_at=self.clock.now())
        except StaleTask:
            return DONE  # another delivery is reconciling it, or it moved on
        try:
            found = self.submitter.find_submitted(task)
        except NO_USABLE_ANSWER as error:
            return self.reconcile_later(task, delivery, error)
        try:
            if found.adopt is not None:
                self.submitter.adopt(task, found.adopt)
                return DONE
            if found.ambiguous:
                if self.endings.fail(task, RECONCILE_AMBIGUOUS, f"Ark holds {len(found.ambiguous)} videos that may "
                                     f"be this task's ({', '.join(found.ambiguous)}); none was taken as its result."):
                    self.submitter.set_aside(task, found.ambiguous)
                return DONE
            if found.undecided:
                return self.reconcile_later(task, delivery)  # a sibling may still claim one: look again
            # The round is still this delivery's (a sibling may have taken the next one while Ark's list was read).
            task = statemachine.update_fields(task, [], clock=self.clock,
                                              condition=(TaskRecord.stage == SUBMITTING) & same_create_attempt(task))
        except ArkTaskTaken:
            return self.reconcile_later(task, delivery)  # another task owned it first: look again without it
        except StaleTask:
            return DONE  # it moved on (another delivery recorded its Ark task, or it ended)
        return self.submit(task, self.submitter.callback_url(task.task_id), delivery)

    def reconcile_later(self, task: TaskRecord, delivery: Delivery, error: ArkError | None = None) -> Outcome:
        """Look at Ark's list again after the grace. Each look counts as a receive, so an Ark that stays down
        ends the task like any other retryable error instead of keeping it `submitting` until its deadline, and
        an Ark task that stays unattributable ends it as ambiguous."""
        if delivery.receive_count < self.lane.max_receives:
            return Retry(CREATE_GRACE_S)
        if error is not None:
            return self.endings.give_up(task, delivery, error)
        self.endings.fail(task, RECONCILE_AMBIGUOUS, "Ark holds a video that may be this task's or another's of the "
                          "same user; none was taken as its result.")
        return Retry(0)
