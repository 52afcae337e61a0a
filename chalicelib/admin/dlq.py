"""Dead letters: what sits in each queue's DLQ (the lanes' and the webhook delivery's), and its replay
(docs/design.md, "Dead letters").

A message reaches a DLQ after its queue's `max_receives`: a lane gave up on its task (failed it
`upstream_unavailable`, the message's last receive moves it there), or its handler kept raising (a store that kept
failing, a bug), or it was unreadable. Listing receives the messages to read them and makes them visible again at
once (a listing never hides them from a replay for longer than it takes).

A replay re-drives each message once, by what its task is now, never by what the message says:
* no task, an unreadable message, a task already finished (terminal): dropped. A finished task stays finished: the
  state machine has no way out of a terminal state, its owner and its webhook were told, and a failure that gave
  the quota back must not run again unseen (nor take a quota the day may no longer have). The owner submits again.
* a video Ark accepted (`external_id`): never sent to its lane (nothing there could create it again anyway); it is
  made due for the poller now, which reads Ark's status (a callback may still end it first).
* any other task (queued, or running without an Ark task: a worker that died mid-call or mid-create): a plain
  message to its lane, whose own paths make it consistent (a lapsed image lease goes back to the queue, a video
  left `submitting` is reconciled through Ark's list), with a fresh count of receives.
* a webhook event: its next attempt, due now, with a fresh retry window; dropped when it was delivered.

Each replay claims a message before it re-drives it: a conditional write of the message's claim (by queue and SQS
message id, `DeadLetterClaimRecord`). SQS may hand one message to two replays (its delivery is at least once, and a
message whose visibility lapsed comes back); of two replays holding it, the one whose write made the claim sends it,
the other leaves it alone (a claim held) or deletes it (a claim sent). The order is crash-safe: claim, send (or make
due), mark the claim sent, delete the message. A replay that dies after its claim and before sending leaves both to
lapse (the claim's lease is the message's visibility, `REPLAY_VISIBILITY_S`): the next replay takes the claim over
and sends it; one that dies after marking leaves the message to a next replay, which deletes it unsent. Only a death
between the send and the mark sends a message twice, and that is one Ark call all the same: the lane's slot acquire
is idempotent per task and its claim (`queued -> running`) is conditional, and the webhook delivery claims each
attempt once.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError

from chalicelib import queues
from chalicelib.audit.trail import AuditTrail
from chalicelib.clock import Clock, iso
from chalicelib.errors import NotFound
from chalicelib.resources import QUEUES, WEBHOOK_DELIVERY, Queue
from chalicelib.store import statemachine, writes
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import DeadLetterClaimRecord, TaskRecord, WebhookAttemptRecord, WebhookEventRecord
from chalicelib.video.status import POLL_SHARD
from chalicelib.webhooks import events
from chalicelib.webhooks.delivery import ATTEMPT_KEY, EVENT_KEY

log = logging.getLogger(__name__)

# A listing shows at most this many messages per queue: a page an admin reads, five receives of SQS's ten, with one
# batched task read; `approximate` says how many there are. A replay re-drives at most REPLAYED_PER_CALL per call,
# well within the API's 28 s (each message costs a read, a send and a delete).
LISTED_PER_QUEUE = 50
REPLAYED_PER_CALL = 100
SQS_MAX_RECEIVE = 10
# A listing holds what it received this long at most (it makes them visible again as soon as it has read them);
# a replay holds each message until it is deleted, this long at most if the replay dies.
LISTING_VISIBILITY_S = 30
REPLAY_VISIBILITY_S = 120
# SQS's short poll may miss messages of a small queue: a receive waits this long while messages are known to be left.
RECEIVE_WAIT_S = 1
MAX_REASON_CHARS = 500
# How often a replay reads a task again that changed under it before it leaves the message where it is.
REDRIVE_ROUNDS = 3

# A message's claim outlives SQS's longest retention (14 days): a message that can still come back finds it.
CLAIM_KEEP_S = 15 * 24 * 3600

TASK_MISSING, TASK_FINISHED, UNREADABLE, DELIVERED, NO_WEBHOOK, REPLAYED = (
    "task_missing", "task_finished", "unreadable", "already_delivered", "no_webhook", "already_replayed")
# What a replay's claim of a message found: it holds it now, another replay holds it, or another one sent it.
CLAIMED, HELD_ELSEWHERE, SENT_ALREADY = "claimed", "held_elsewhere", "sent_already"


def queue_named(name: str) -> Queue:
    for queue in QUEUES:
        if queue.name == name:
            return queue
    raise NotFound(f"No queue named {name!r}.", code="lane_not_found")


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: str | None

    @classmethod
    def of(cls, message: dict[str, Any]) -> DeadLetter:
        attributes = message.get("Attributes", {})
        sent = attributes.get("SentTimestamp")
        return cls(message["MessageId"], message["ReceiptHandle"], message.get("Body", ""),
                   int(attributes.get("ApproximateReceiveCount", "0")),
                   iso(int(sent) / 1000) if sent and str(sent).isdigit() else None)

    def task_id(self, queue: Queue) -> str | None:
        """The task the message names (None: unreadable)."""
        if queue is WEBHOOK_DELIVERY:
            message = self.webhook_message()
            return message.task_id if message else None
        try:
            task_id = json.loads(self.body)["task_id"]
        except (ValueError, KeyError, TypeError):
            return None
        return task_id if isinstance(task_id, str) and 0 < len(task_id) <= 64 else None

    def webhook_message(self) -> events.WebhookMessage | None:
        try:
            return events.parse_message(self.body)
        except (ValueError, KeyError, TypeError, ValidationError):
            return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 1] + "…"


def _task_reason(task: TaskRecord) -> str:
    """Why a lane's message died, as its task records it: the lane's last error, else what is known."""
    if task.error:
        return _clip(f"{task.error.code}: {task.error.message}")
    if task.results_copy_error:
        return _clip(f"results copy: {task.results_copy_error.code}: {task.results_copy_error.message}")
    return f"no error recorded: the lane's worker raised on every receive while the task was {task.status}"


def _webhook_reason(message: events.WebhookMessage) -> str:
    """The last recorded attempt's error of the message's webhook event, else what is known."""
    attempts = WebhookAttemptRecord.query(
        message.task_id, WebhookAttemptRecord.delivery_key.startswith(ATTEMPT_KEY), scan_index_forward=False,
        filter_condition=WebhookAttemptRecord.webhook_id == message.webhook_id, limit=1, consistent_read=True)
    for attempt in attempts:
        answer = attempt.error or (f"HTTP {int(attempt.status_code)}" if attempt.status_code is not None else None)
        return _clip(f"attempt {int(attempt.attempt)}: {answer or attempt.outcome}")
    return "no attempt recorded: the delivery raised on every receive"


class DeadLetters:
    def __init__(self, *, sqs: Any, audit: AuditTrail, clock: Clock) -> None:
        self.sqs = sqs
        self.audit = audit
        self.clock = clock

    # --- listing ------------------------------------------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        return {"queues": [self._list(queue) for queue in QUEUES]}

    def _list(self, queue: Queue) -> dict[str, Any]:
        url = queues.dead_letter_url_of(self.sqs, queue)
        visible = self._visible(url)
        received = self._receive(url, LISTED_PER_QUEUE, LISTING_VISIBILITY_S, visible=visible)
        try:
            messages = self._describe(queue, received)
        finally:
            self._show_again(url, received)
        return {"lane": queue.name, "approximate": visible, "messages": messages}

    def _describe(self, queue: Queue, received: list[DeadLetter]) -> list[dict[str, Any]]:
        task_ids = {task_id for letter in received if (task_id := letter.task_id(queue))}
        tasks = {task.task_id: task for task in TaskRecord.batch_get(task_ids, consistent_read=True)} \
            if task_ids else {}
        described = []
        for letter in received:
            task_id = letter.task_id(queue)
            task = tasks.get(task_id) if task_id else None
            if task_id is None:
                reason = "unreadable message"
            elif task is None:
                reason = "task not found"
            elif queue is WEBHOOK_DELIVERY and (webhook := letter.webhook_message()) is not None:
                reason = _webhook_reason(webhook)
            else:
                reason = _task_reason(task)
            described.append({"message_id": letter.message_id, "task_id": task_id,
                              "task_status": task.status if task else None, "reason": reason,
                              "receive_count": letter.receive_count, "sent_at": letter.sent_at})
        return described

    # --- replay -------------------------------------------------------------------------------------------------

    def replay(self, queue_name: str, message_ids: list[str] | None, *, actor: str) -> dict[str, Any]:
        """Re-drive the queue's dead letters (those of `message_ids` only, when given), REPLAYED_PER_CALL at most;
        `{"replayed", "dropped", "dropped_reasons"}`. One audit entry tells what it did, even when it failed
        part-way (the error is raised after it)."""
        queue = queue_named(queue_name)
        url = queues.dead_letter_url_of(self.sqs, queue)
        wanted = set(message_ids) if message_ids else None
        replayed: list[dict[str, Any]] = []
        dropped: Counter[str] = Counter()
        passed_over: list[DeadLetter] = []
        replay_id = uuid.uuid4().hex
        try:
            for letter in self._receive(url, REPLAYED_PER_CALL, REPLAY_VISIBILITY_S, visible=self._visible(url),
                                        stop=wanted):
                if wanted is not None and letter.message_id not in wanted:
                    passed_over.append(letter)
                    continue
                claim = self._claim(queue, letter, replay_id)
                if claim == HELD_ELSEWHERE:
                    continue  # left hidden: that replay sends and deletes it (if it dies, the next one does)
                if claim == SENT_ALREADY:
                    verdict: str | object | None = REPLAYED  # its sender died before deleting it, or is about to
                else:
                    verdict = self._redrive(queue, letter)
                    if verdict is _KEEP:
                        self._release(queue, letter, replay_id)
                        passed_over.append(letter)
                        continue
                    self._mark_sent(queue, letter, replay_id)
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=letter.receipt_handle)
                if verdict is None:
                    replayed.append({"message_id": letter.message_id, "task_id": letter.task_id(queue)})
                else:
                    dropped[str(verdict)] += 1
        finally:
            self._show_again(url, passed_over)
            answer = {"replayed": len(replayed), "dropped": sum(dropped.values()), "dropped_reasons": dict(dropped)}
            if replayed or dropped:
                self.audit.record(actor=actor, action="dlq.replay", target=f"dlq:{queue.name}", before=None,
                                  after={**answer, "replayed_messages": replayed})
        return answer

    # --- claims -------------------------------------------------------------------------------------------------

    def _claim(self, queue: Queue, letter: DeadLetter, replay_id: str) -> str:
        """Claim the message for this replay: a new claim, or one whose replay died before sending (its lease
        lapsed); else what the other replay's claim says."""
        key = _claim_key(queue, letter)
        now = self.clock.now()
        claim = DeadLetterClaimRecord(key, replay_id=replay_id, lease_until=now + REPLAY_VISIBILITY_S,
                                      expires_at_epoch=int(now) + CLAIM_KEEP_S)
        try:
            claim.save(condition=DeadLetterClaimRecord.claim_key.does_not_exist()
                       | (DeadLetterClaimRecord.sent.does_not_exist() & (DeadLetterClaimRecord.lease_until < now)))
            return CLAIMED
        except PutError as error:
            if not writes.condition_failed(error):
                raise
        try:
            held = DeadLetterClaimRecord.get(key, consistent_read=True)
        except DoesNotExist:
            return HELD_ELSEWHERE  # released meanwhile (its task kept changing): a later replay takes it
        return SENT_ALREADY if held.sent else HELD_ELSEWHERE

    def _mark_sent(self, queue: Queue, letter: DeadLetter, replay_id: str) -> None:
        """The message was re-driven (or judged): a replay that receives it again deletes it unsent."""
        try:
            DeadLetterClaimRecord(_claim_key(queue, letter)).update(
                actions=[DeadLetterClaimRecord.sent.set(True)], condition=DeadLetterClaimRecord.replay_id == replay_id)
        except UpdateError as error:
            if not writes.condition_failed(error):
                raise
            # Taken over: this replay outlived its lease. The taker decides again by the task, as this one did.
            log.warning("the claim of dead letter %s was taken over before it was marked sent", letter.message_id)

    def _release(self, queue: Queue, letter: DeadLetter, replay_id: str) -> None:
        """Give the claim up (the message stays in the DLQ): the next replay may claim it at once."""
        try:
            DeadLetterClaimRecord(_claim_key(queue, letter)).delete(
                condition=DeadLetterClaimRecord.replay_id == replay_id)
        except DeleteError as error:
            if not writes.condition_failed(error):
                raise

    # --- re-driving ---------------------------------------------------------------------------------------------

    def _redrive(self, queue: Queue, letter: DeadLetter) -> str | object | None:
        """None when re-driven; else why it is dropped (`_KEEP`: left in the DLQ, its task kept changing)."""
        if queue is WEBHOOK_DELIVERY:
            return self._redrive_webhook(letter)
        task_id = letter.task_id(queue)
        if task_id is None:
            return UNREADABLE
        for _ in range(REDRIVE_ROUNDS):
            try:
                task = TaskRecord.get(task_id, consistent_read=True)
            except DoesNotExist:
                return TASK_MISSING
            if task.status in statemachine.TERMINAL:
                return TASK_FINISHED
            if task.type == "video" and task.external_id:
                try:  # Ark has it: the poller reads its status now; nothing is sent to a lane
                    statemachine.write_fields(task, [TaskRecord.poll_shard.set(POLL_SHARD),
                                                     TaskRecord.next_poll_at.set(self.clock.now())],
                                              condition=(TaskRecord.status == statemachine.RUNNING)
                                              & (TaskRecord.external_id == task.external_id))
                except StaleTask:
                    continue  # it ended (or changed) meanwhile: decide again
                return None
            queues.enqueue(self.sqs, task.lane or queue.name, task.task_id)
            return None
        return _KEEP

    def _redrive_webhook(self, letter: DeadLetter) -> str | None:
        message = letter.webhook_message()
        if message is None:
            return UNREADABLE
        try:
            task = TaskRecord.get(message.task_id, consistent_read=True)
        except DoesNotExist:
            return TASK_MISSING
        if not task.webhook_url:
            return NO_WEBHOOK
        try:
            event = WebhookEventRecord.get(message.task_id, EVENT_KEY + message.webhook_id, consistent_read=True)
        except DoesNotExist:
            event = None
        if event is not None and event.outcome == "delivered":
            return DELIVERED
        # The attempt after any claimed: the delivery claims each attempt once, so two replays of one event post it
        # once.
        claimed = int(event.attempt) if event is not None else 0
        now = self.clock.now()
        events.send(self.sqs, message.model_copy(update={"attempt": max(message.attempt, claimed) + 1,
                                                         "first_at": now, "not_before": now}))
        return None

    # --- SQS ----------------------------------------------------------------------------------------------------

    def _visible(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"].get("ApproximateNumberOfMessages", 0))

    def _receive(self, url: str, most: int, visibility_s: int, *, visible: int,
                 stop: set[str] | None = None) -> list[DeadLetter]:
        """Up to `most` messages, each once, hidden for `visibility_s`; stops once the `visible` messages the queue
        held were received, when it gives no more, or once every id of `stop` was received."""
        received: dict[str, DeadLetter] = {}
        left = visible
        while len(received) < most and left > 0:
            answer = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=min(SQS_MAX_RECEIVE, most - len(received)),
                VisibilityTimeout=visibility_s, WaitTimeSeconds=RECEIVE_WAIT_S, AttributeNames=["All"])
            batch = [DeadLetter.of(message) for message in answer.get("Messages", [])]
            fresh = [letter for letter in batch if letter.message_id not in received]
            if not fresh:
                break
            received.update((letter.message_id, letter) for letter in fresh)
            left -= len(fresh)
            if stop is not None and stop <= received.keys():
                break
        return list(received.values())

    def _show_again(self, url: str, letters: list[DeadLetter]) -> None:
        """Make received messages visible again at once."""
        for start in range(0, len(letters), SQS_MAX_RECEIVE):
            chunk = letters[start:start + SQS_MAX_RECEIVE]
            answer = self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(index), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                for index, letter in enumerate(chunk)])
            for failure in answer.get("Failed", []):
                log.warning("dead letter stays hidden until its visibility ends: %s", failure.get("Message"))


_KEEP = object()


def _claim_key(queue: Queue, letter: DeadLetter) -> str:
    return f"{queue.name}#{letter.message_id}"
