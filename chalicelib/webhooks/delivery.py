"""The webhook queue's consumer: each message is the next attempt of one event (docs/api.md, "Webhooks").

Per message:
  1. not due yet (SQS delays a message by 15 minutes at most): sent on again, delayed by what is left; a
     `succeeded` whose results are still being copied into the bucket (the lane marks the task succeeded with Ark's
     URLs, then copies them) is sent on too, every `COPY_POLL_S`, so the payload carries the copies' presigned URLs,
     until `COPY_WAIT_S` after it was first due (a copy that failed, or does not come, leaves Ark's 24 h URLs);
  2. claimed: the event's record takes the message's attempt number (and SQS message id) only if no attempt that
     far was claimed before, or this very message claimed it (a redelivery after a crash); a second message of
     one event (a duplicate notification) or of one attempt (a hop sent twice) finds the claim taken and is
     dropped, so one event makes one chain of attempts;
  3. the payload is built now, from the task as the API shows it (fresh presigned result URLs), signed with a fresh
     timestamp by each of the user's signing secrets (`secrets`), and POSTed under the event's `webhook-id`
     (`sender`);
  4. the attempt is recorded (kept `RECORD_TTL_S`); a timeout, a failed connection, a 5xx or a 429 is tried again
     after an exponential, jittered backoff (no sooner than a `Retry-After` asks, up to `MAX_RETRY_AFTER_S`),
     until `RETRY_WINDOW_S` after the first attempt; any other answer ends the event.

A handler that raises leaves its message to come back (the same message id, so its claim holds), and a message that
keeps failing ends in the queue's DLQ.
"""

from __future__ import annotations

import logging
import math
import random
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pynamodb.exceptions import DoesNotExist, UpdateError
from standardwebhooks import Webhook

from chalicelib import observability
from chalicelib.api.bodies import TaskBodies
from chalicelib.backoff import compute_backoff
from chalicelib.clock import Clock, iso
from chalicelib.media import results
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord, WebhookAttemptRecord, WebhookEventRecord
from chalicelib.store.writes import condition_failed
from chalicelib.webhooks import events
from chalicelib.webhooks.bodies import Outcome, WebhookAttemptBody, WebhookPayload
from chalicelib.webhooks.events import WebhookMessage
from chalicelib.webhooks.secrets import WebhookSecrets
from chalicelib.webhooks.sender import Answer, WebhookSender

log = logging.getLogger(__name__)

# Retries go on until this long after the first attempt (the last one may come a backoff later).
RETRY_WINDOW_S = 24 * 3600
RETRY_BASE_S = 30
RETRY_CAP_S = 2 * 3600
RETRY_SPREAD = (0.75, 1.25)
MAX_RETRY_AFTER_S = 6 * 3600
# A bound whatever the window: with the backoff above, about 20 attempts fill it.
MAX_ATTEMPTS = 40
RECORD_TTL_S = 30 * 24 * 3600
# A task's attempts listed at most (its latest): a task has five events at most, each some 20 attempts.
MAX_LISTED_ATTEMPTS = 500
EVENT_KEY, ATTEMPT_KEY = "event#", "attempt#"
# How long a `succeeded` webhook waits for its results' copy (a few seconds as a rule), and how often it looks.
COPY_WAIT_S = 120
COPY_POLL_S = 3


def signature(secrets: list[str], webhook_id: str, timestamp: int, body: str) -> str:
    """`webhook-signature`: one `v1,<base64>` per secret, space-separated (Standard Webhooks)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return " ".join(Webhook(secret).sign(webhook_id, moment, body) for secret in secrets)


def attempts_of(task_id: str) -> list[WebhookAttemptBody]:
    """The task's recorded attempts, oldest first (its latest MAX_LISTED_ATTEMPTS)."""
    latest = WebhookAttemptRecord.query(task_id, WebhookAttemptRecord.delivery_key.startswith(ATTEMPT_KEY),
                                        scan_index_forward=False, limit=MAX_LISTED_ATTEMPTS, consistent_read=True)
    return [WebhookAttemptBody(
        webhook_id=record.webhook_id, type=record.type, attempt=int(record.attempt), at=record.at,
        status_code=None if record.status_code is None else int(record.status_code),
        duration_ms=int(record.duration_ms), error=record.error, outcome=record.outcome,
        next_attempt_at=record.next_attempt_at,
    ) for record in reversed(list(latest))]


class WebhookDelivery:
    def __init__(self, *, sqs: Any, sender: WebhookSender, secrets: WebhookSecrets, bodies: TaskBodies,
                 clock: Clock, rng: random.Random | None = None, copies_results: bool = False) -> None:
        """`copies_results`: whether the deployment copies results into a bucket (else none is waited for)."""
        self.sqs = sqs
        self.copies_results = copies_results
        self.sender = sender
        self.secrets = secrets
        self.bodies = bodies
        self.clock = clock
        self.rng = rng or random.Random()

    def handle(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch of the queue; returns Lambda's partial-batch answer (the messages to give back)."""
        failures = []
        for record in observability.per_task(records, observability.sqs_task_id):
            try:
                message = events.parse_message(record["body"])
            except (ValueError, KeyError, TypeError, ValidationError):
                log.error("unreadable webhook message %s", record.get("messageId"))
                failures.append({"itemIdentifier": record["messageId"]})
                continue
            try:
                self.process(message, record["messageId"])
            except Exception:
                log.exception("webhook %s of task %s failed", message.webhook_id, message.task_id)
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    def process(self, message: WebhookMessage, message_id: str) -> None:
        now = self.clock.now()
        if message.not_before > now:
            events.send(self.sqs, message, delay_s=math.ceil(message.not_before - now))
            return
        try:
            task: TaskRecord | None = TaskRecord.get(message.task_id, consistent_read=True)
        except DoesNotExist:
            task = None
        if task is not None and self._awaits_copy(message, task, now):
            # Before the claim: the message sent on is the one to claim this attempt.
            events.send(self.sqs, message.model_copy(update={"not_before": now + COPY_POLL_S}), delay_s=COPY_POLL_S)
            return
        if not self._claim(message, message_id, now):
            log.info("webhook %s attempt %d was claimed already", message.webhook_id, message.attempt)
            return
        if task is None:
            self._record(message, now, Answer(None, 0, "the task was deleted"), "failed")
            return
        if not task.webhook_url:
            return
        body = WebhookPayload.of(message.event, message.occurred_at,
                                 self.bodies.body(task, with_queue_position=True)).model_dump_json()
        timestamp = math.floor(now)
        headers = {"webhook-id": message.webhook_id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature(self.secrets.signing(task.user_id), message.webhook_id, timestamp,
                                                  body)}
        answer = self.sender.post(task.webhook_url, body.encode(), headers)
        follow_up = self._follow_up(message, answer, now)
        outcome: Outcome = "delivered" if answer.delivered else "retrying" if follow_up else "failed"
        self._record(message, now, answer, outcome, follow_up.not_before if follow_up else None)
        if follow_up is not None:
            events.send(self.sqs, follow_up, delay_s=math.ceil(follow_up.not_before - now))

    def _awaits_copy(self, message: WebhookMessage, task: TaskRecord, now: float) -> bool:
        """Whether the event's payload would carry results still at Ark that are being copied into the bucket."""
        return (self.copies_results and message.event == "succeeded" and task.status == statemachine.SUCCEEDED
                and task.results_copy_error is None and now < message.first_at + COPY_WAIT_S
                and results.stored_count(task) < results.result_count(task))

    def _follow_up(self, message: WebhookMessage, answer: Answer, now: float) -> WebhookMessage | None:
        """The next attempt's message, when the answer asks for one and the window still allows it."""
        if answer.delivered or not answer.retryable or message.attempt >= MAX_ATTEMPTS \
                or now - message.first_at >= RETRY_WINDOW_S:
            return None
        delay = compute_backoff(message.attempt - 1, base=RETRY_BASE_S, cap=RETRY_CAP_S, spread=RETRY_SPREAD,
                                rng=self.rng)
        if answer.retry_after_s is not None:
            delay = max(delay, min(answer.retry_after_s, MAX_RETRY_AFTER_S))
        return message.model_copy(update={"attempt": message.attempt + 1, "not_before": now + delay})

    def _claim(self, message: WebhookMessage, message_id: str, now: float) -> bool:
        event = WebhookEventRecord(message.task_id, EVENT_KEY + message.webhook_id)
        claimable = (WebhookEventRecord.attempt.does_not_exist() | (WebhookEventRecord.attempt < message.attempt)
                     | ((WebhookEventRecord.attempt == message.attempt)
                        & (WebhookEventRecord.message_id == message_id)))
        try:
            event.update(actions=[WebhookEventRecord.attempt.set(message.attempt),
                                  WebhookEventRecord.message_id.set(message_id),
                                  WebhookEventRecord.expires_at_epoch.set(math.ceil(now + RECORD_TTL_S))],
                         condition=claimable)
        except UpdateError as error:
            if condition_failed(error):
                return False
            raise
        return True

    def _record(self, message: WebhookMessage, now: float, answer: Answer, outcome: Outcome,
                next_attempt_at: float | None = None) -> None:
        at = iso(now)
        WebhookAttemptRecord(
            message.task_id, f"{ATTEMPT_KEY}{at}#{message.webhook_id}#{message.attempt:03d}",
            webhook_id=message.webhook_id, type=f"task.{message.event}", attempt=message.attempt, at=at,
            status_code=answer.status_code, duration_ms=answer.duration_ms, error=answer.error, outcome=outcome,
            next_attempt_at=iso(next_attempt_at) if next_attempt_at is not None else None,
            expires_at_epoch=math.ceil(now + RECORD_TTL_S),
        ).save()
        if outcome != "retrying":
            WebhookEventRecord(message.task_id, EVENT_KEY + message.webhook_id).update(
                actions=[WebhookEventRecord.outcome.set(outcome)])
