"""Waiting for a slot, and waking the oldest waiter when one frees (docs/design.md, "Slots").

A message whose model has no free slot goes back with a short jittered visibility timeout, longer each time the same
message finds no slot, and the task keeps the message's receipt (`TaskRecord.wait_receipt`). A released slot takes
the receipt off the oldest waiting task whose user is under its cap, conditionally (two releases wake two tasks),
and makes that same message visible at once; only a receipt gone stale costs a fresh copy. Waiting never counts
towards the DLQ: near `max_receives` a waiting message is replaced by a fresh copy.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib import catalog, queues
from chalicelib.backoff import compute_backoff
from chalicelib.errors import NotFound
from chalicelib.lanes.messages import DONE, Delivery, Outcome, Retry
from chalicelib.resources import Lane
from chalicelib.settings import Settings
from chalicelib.store import slots, statemachine
from chalicelib.store.errors import StaleTask, WriteFailed
from chalicelib.store.records import TaskRecord, optional_int

log = logging.getLogger(__name__)

# No-slot rechecks back off from SLOT_WAIT_SECONDS to 8 times that.
MAX_SLOT_WAIT_DOUBLINGS = 3
SQS_MAX_DELAY_S = 900
# Queued tasks of a model a released slot looks through for one it can wake (deferred, user under its cap), read
# a page at a time: usually the first page has one.
WAKE_LOOKAHEAD, WAKE_PAGE_SIZE = 50, 10


class Waiting:
    """How a lane's messages wait: to come back later without counting towards the DLQ, and for a slot."""

    def __init__(self, lane: Lane, *, sqs: Any, settings: Settings, rng: random.Random) -> None:
        self.lane = lane
        self.sqs = sqs
        self.settings = settings
        self.rng = rng

    def wait(self, delivery: Delivery, delay_s: int, wakeable: bool = False) -> Outcome:
        """Come back later without counting towards the DLQ: near `max_receives`, re-send instead."""
        if delivery.receive_count < self.lane.max_receives - 1:
            return Retry(delay_s, wakeable)
        queues.enqueue(self.sqs, self.lane.name, delivery.task_id, delay_s=min(delay_s, SQS_MAX_DELAY_S))
        if wakeable:  # the receipt kept from an earlier deferral names the message this one replaces
            note_wait_receipt(delivery.task_id, None)
        return DONE

    def slot_wait(self, delivery: Delivery) -> int:
        """Jittered, and longer each time the same message finds no slot: a released slot wakes the oldest
        waiting task at once, so these rechecks are only the fallback, and fewer of them leave the slot
        semaphore and SQS to the tasks that can run."""
        return round(compute_backoff(delivery.receive_count - 1, base=self.settings.slot_wait_s,
                                     max_exponent=MAX_SLOT_WAIT_DOUBLINGS, spread=(1.0, 2.0), rng=self.rng))

    @staticmethod
    def remember(delivery: Delivery) -> None:
        """Note the receipt of a message deferred for want of a slot, for `Waker.wake_next` (after its visibility
        change, which a wake-up must come after)."""
        note_wait_receipt(delivery.task_id, delivery.receipt_handle)


def note_wait_receipt(task_id: str, receipt: str | None) -> None:
    """Keep (or, with None, drop) the receipt a wake-up would use, while the task is queued. Only promptness
    depends on it: a write that fails is logged, and the message still comes back on its own."""
    action = TaskRecord.wait_receipt.remove() if receipt is None else TaskRecord.wait_receipt.set(receipt)
    try:
        statemachine.write_fields(TaskRecord(task_id), [action], condition=TaskRecord.status == statemachine.QUEUED)
    except StaleTask:
        pass  # claimed or ended meanwhile: nothing is waiting
    except WriteFailed as error:
        log.warning("wait receipt of task %s not updated: %s", task_id, error)


class Waker:
    """Wakes the oldest task waiting for a slot a transition gave back (a listener of the state machine)."""

    def __init__(self, *, sqs: Any) -> None:
        self.sqs = sqs

    def wake_next(self, released: TaskRecord) -> None:
        """A slot was given back: make the message of the oldest task waiting for it visible now.

        Only a task deferred for want of a slot is woken (one in a retry's backoff waits it out), and with a
        per-user cap, only one whose user is under it. Taking the receipt off the task first means two releases at
        once wake two different tasks, and no task gets a second message.
        """
        try:
            user_cap = optional_int(catalog.get_model(released.model_id).max_running_per_user)
            users_full: dict[str, bool] = {}
            for candidate in TaskRecord.queued_by_model.query(released.model_id, limit=WAKE_LOOKAHEAD,
                                                              page_size=WAKE_PAGE_SIZE, scan_index_forward=True):
                if not candidate.wait_receipt:
                    continue
                if user_cap is not None:
                    if candidate.user_id not in users_full:
                        users_full[candidate.user_id] = slots.in_use(
                            slots.user_slot_key(released.model_id, candidate.user_id)) >= user_cap
                    if users_full[candidate.user_id]:
                        continue
                if self.wake(candidate):
                    return
        except (PynamoDBException, ClientError, NotFound, WriteFailed) as error:
            # Only promptness is lost: the waiting task's own message comes back after its short wait.
            log.warning("could not wake the next task of %s: %s", released.model_id, error)

    def wake(self, candidate: TaskRecord) -> bool:
        """Make `candidate`'s deferred message visible; False when another release woke it first."""
        try:
            statemachine.write_fields(
                TaskRecord(candidate.task_id), [TaskRecord.wait_receipt.remove()],
                condition=(TaskRecord.wait_receipt == candidate.wait_receipt)
                & (TaskRecord.status == statemachine.QUEUED),
            )
        except StaleTask:
            return False
        try:
            self.sqs.change_message_visibility(QueueUrl=queues.queue_url(self.sqs, candidate.lane),
                                               ReceiptHandle=candidate.wait_receipt, VisibilityTimeout=0)
        except ClientError as error:
            if "MessageNotInflight" in error.response.get("Error", {}).get("Code", ""):
                return True  # its deferral ended already: it is visible, waiting to be received
            queues.enqueue(self.sqs, candidate.lane, candidate.task_id)  # the receipt went stale: a fresh message
        return True
