"""A lane's part in keeping results: every message for a succeeded task copies what is still at Ark into the
bucket (`chalicelib.media.results`), within what is left of the invocation, and hands what it could not finish to a
fresh message."""

from __future__ import annotations

import logging
from typing import Any

from chalicelib import queues
from chalicelib.clock import Clock
from chalicelib.lanes.messages import Delivery
from chalicelib.media import results
from chalicelib.media.downloads import Downloads
from chalicelib.resources import Lane
from chalicelib.settings import Settings
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import TaskRecord

log = logging.getLogger(__name__)


class ResultCopies:
    def __init__(self, lane: Lane, *, s3: Any, sqs: Any, downloads: Downloads, settings: Settings,
                 clock: Clock) -> None:
        self.lane = lane
        self.s3 = s3
        self.sqs = sqs
        self.downloads = downloads
        self.settings = settings
        self.clock = clock

    def keep(self, task: TaskRecord, delivery: Delivery, whole_invocation: bool) -> None:
        """Copy a succeeded task's results into the bucket (nothing to do without one, or once copied).

        A copy that runs out of time goes on from a fresh message while that can help: after an Ark call took part
        of this invocation, or when this one stored something (so the rounds end: each stores one more at least).
        """
        stored_before = results.stored_count(task)
        try:
            kept = results.copy_results(task, s3=self.s3, downloads=self.downloads, bucket=self.settings.media_bucket,
                                        clock=self.clock, deadline=delivery.deadline)
        except StaleTask:
            log.info("task %s was deleted, or its results copied by another delivery", task.task_id)
            return
        if results.ran_out_of_time(kept) and (not whole_invocation or results.stored_count(kept) > stored_before):
            self.copy_later(kept)

    def copy_later(self, task: TaskRecord) -> None:
        """A fresh message of this lane copies the task's results (as `task` holds them), with a whole invocation
        of its own."""
        if self.settings.media_bucket:
            queues.enqueue(self.sqs, self.lane.name, task.task_id, copy=results.copy_order(task))
