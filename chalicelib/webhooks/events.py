"""A task's status changes its webhook subscribes to, as messages on the webhook queue (docs/api.md, "Webhooks").

The state machine's listener (`chalicelib.wiring`) hands every change it writes to `WebhookEvents.on_change`.
Only a transition's own write counts (a change of the same status later, such as results copied, is none): the
status a task entered carries the time it entered it (`started_at`, `finished_at`), which is the write's
`updated_at`. Each event's `webhook-id` is derived from the task, the status and that time, so however often one
transition is told (a duplicate notification, a redelivered message) it is one event, and the delivery claims each
attempt of it once (`chalicelib.webhooks.delivery`); a task running a second time (after Ark's retryable error) is
a second `running` event.

Nothing between the write and the send loses an event (`outbox`): the transition's write also marks the task
(`due_mark`), the listener removes the mark once the message is sent, and the sweeper sends the events of a mark
left past its grace again (`WebhookEvents.resend_due`), under the same `webhook-id`s.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pynamodb.expressions.update import Action

from chalicelib import queues
from chalicelib.clock import Clock
from chalicelib.resources import WEBHOOK_DELIVERY
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.webhooks import outbox

log = logging.getLogger(__name__)

WebhookEvent = Literal["running", "succeeded", "failed", "cancelled", "expired"]
EVENTS: tuple[str, ...] = ("running", "succeeded", "failed", "cancelled", "expired")
DEFAULT_EVENTS: tuple[str, ...] = tuple(sorted(statemachine.TERMINAL, key=EVENTS.index))
# SQS delays a message by at most 15 minutes: a longer wait is several hops (`chalicelib.webhooks.delivery`).
SQS_MAX_DELAY_S = 900


class WebhookMessage(BaseModel):
    """One message of the webhook queue: the next attempt (`attempt`, from 1) of one event, due at `not_before`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    webhook_id: Annotated[str, StringConstraints(pattern=r"^msg_[0-9a-f]{32}$")]
    task_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    event: WebhookEvent
    # When the task entered the status (the payload's `timestamp`): the same on every attempt.
    occurred_at: Annotated[str, StringConstraints(max_length=32)]
    attempt: Annotated[int, Field(ge=1)]
    # Epoch seconds: when the first attempt was due (the retry window counts from it), and when this one is.
    first_at: float
    not_before: float


def webhook_id(task_id: str, status: str, entered_at: str) -> str:
    return "msg_" + hashlib.sha256(f"{task_id}\n{status}\n{entered_at}".encode()).hexdigest()[:32]


def entered_at(task: TaskRecord) -> str | None:
    """When the task entered its status, as the transition wrote it (None for a status no webhook is for)."""
    if task.status == statemachine.RUNNING:
        return task.started_at
    return task.finished_at if task.status in statemachine.TERMINAL else None


def subscribes(task: TaskRecord, status: str) -> bool:
    return bool(task.webhook_url) and status in (task.webhook_events or DEFAULT_EVENTS)


def subscribed(task: TaskRecord) -> bool:
    return subscribes(task, task.status)


def told(task: TaskRecord) -> list[tuple[str, str]]:
    """The events the task's record still tells, as (status, entered at): its latest `running` and its end, those
    its webhook subscribes to (an earlier `running`, replaced by a later one, is told no more)."""
    events = [(statemachine.RUNNING, task.started_at)]
    if task.status in statemachine.TERMINAL:
        events.append((task.status, task.finished_at))
    return [(status, at) for status, at in events if at is not None and subscribes(task, status)]


def due_mark(task: TaskRecord, target: str, moment: float) -> list[Action]:
    """The state machine's write hook: a transition to a status the task's webhook subscribes to marks the task in
    the outbox, in the same write."""
    return outbox.mark(task, moment) if subscribes(task, target) else []


def send(sqs: Any, message: WebhookMessage, delay_s: int = 0) -> None:
    sqs.send_message(QueueUrl=queues.url_of(sqs, WEBHOOK_DELIVERY), MessageBody=message.model_dump_json(),
                     DelaySeconds=max(0, min(SQS_MAX_DELAY_S, delay_s)))


def parse_message(body: str) -> WebhookMessage:
    return WebhookMessage.model_validate(json.loads(body))


class WebhookEvents:
    def __init__(self, *, sqs: Any, clock: Clock) -> None:
        self.sqs = sqs
        self.clock = clock

    def first_message(self, task: TaskRecord, status: str, occurred: str) -> WebhookMessage:
        now = self.clock.now()
        return WebhookMessage(webhook_id=webhook_id(task.task_id, status, occurred), task_id=task.task_id,
                              event=status, occurred_at=occurred, attempt=1, first_at=now, not_before=now)

    def on_change(self, task: TaskRecord) -> None:
        """Queue the event of a transition the task's webhook subscribes to, then take its outbox mark off. Never
        raises: the change is written, and a webhook must not undo or hold it up (a message that could not be sent
        stays marked, for the sweeper)."""
        occurred = entered_at(task)
        if not subscribed(task) or occurred is None or task.updated_at != occurred:
            return
        message = self.first_message(task, task.status, occurred)
        try:
            send(self.sqs, message)
        except (BotoCoreError, ClientError):
            log.exception("webhook %s of task %s (%s) could not be queued: left to the sweeper", message.webhook_id,
                          task.task_id, task.status)
            return
        if outbox.set_by_this_write(task):
            outbox.clear(task)

    def resend_due(self) -> int:
        """The sweeper's part: for each task marked longer than the grace (a page), the first message of every event
        its record tells, then the mark removed (if nothing was written since; else the next sweep looks again).
        An event queued already is told twice under one `webhook-id`: the delivery's claim keeps one of them."""
        resent = 0
        for task in outbox.due(self.clock.now()):
            try:
                for status, occurred in told(task):
                    send(self.sqs, self.first_message(task, status, occurred))
                    resent += 1
            except (BotoCoreError, ClientError) as error:
                log.warning("webhooks of task %s left for the next sweep: %s", task.task_id, error)
                continue
            outbox.clear(task)
        return resent
