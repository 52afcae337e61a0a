"""Lambda's SQS event source, locally: feeds each `@app.on_sqs_message` handler from its moto queue.

Like the real event source mapping: the queue is the one the handler declares (a lane's, from
`chalicelib.resources`); records are Lambda-shaped; at most the function's concurrency (reserved concurrency or
the source's `maximum_concurrency`, whichever is lowest) runs at once; a batch is deleted only after the handler
returns; `{"batchItemFailures": [...]}` keeps just those messages (the project's merge template turns
`ReportBatchItemFailures` on); a raising handler keeps the whole batch. Failed messages come back after their
visibility timeout, and SQS's redrive policy moves them to the DLQ, exactly as on AWS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from chalice.app import Chalice, SQSEventConfig
from chalice.config import Config

from devstack.lambdas import invoke

logger = logging.getLogger(__name__)
# Lambda's own default is the account's whole pool; locally a small number keeps a laptop responsive.
DEFAULT_CONCURRENCY = 2
# Receives wait this long at most, so a stop is noticed quickly.
RECEIVE_WAIT_S = 1
# SQS hands out at most this many messages per receive.
SQS_MAX_RECEIVE = 10


@dataclass(frozen=True)
class SqsSubscription:
    function_name: str
    queue_name: str
    batch_size: int
    concurrency: int


def _queue_name(source: SQSEventConfig) -> str:
    if source.queue:
        return source.queue
    return str(source.queue_arn).rsplit(":", 1)[-1]


def _concurrency(source: SQSEventConfig, config: Config | None, stage: str) -> int:
    limits = [source.maximum_concurrency]
    if config is not None:
        limits.append(config.scope(stage, source.name).reserved_concurrency)
    configured = [limit for limit in limits if limit]
    return min(configured) if configured else DEFAULT_CONCURRENCY


def sqs_subscriptions(app: Chalice, config: Config | None, stage: str) -> list[SqsSubscription]:
    """One per `@app.on_sqs_message`."""
    return [
        SqsSubscription(source.name, _queue_name(source), source.batch_size, _concurrency(source, config, stage))
        for source in app.event_sources
        if isinstance(source, SQSEventConfig)
    ]


def lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS `ReceiveMessage` message in the shape Lambda hands to the function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {key[0].lower() + key[1:]: value for key, value in attribute.items()}
            for name, attribute in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_message_ids(result: Any, message_ids: set[str]) -> set[str]:
    """Which messages stay queued, per Lambda's partial batch response rules."""
    if not isinstance(result, dict) or "batchItemFailures" not in result:
        return set()
    failed = {failure.get("itemIdentifier") for failure in result["batchItemFailures"] or []}
    # Lambda treats an empty or unknown identifier as the whole batch failing.
    return failed if failed <= message_ids else set(message_ids)


class SqsPump:
    def __init__(
        self,
        app: Chalice,
        config: Config | None,
        stage: str,
        subscriptions: list[SqsSubscription],
        sqs: Any,
        region: str,
    ) -> None:
        self._app, self._config, self._stage = app, config, stage
        self.subscriptions = subscriptions
        self._sqs = sqs
        self._region = region
        self._stopping = threading.Event()
        self._pollers: list[threading.Thread] = []
        self._invocations: set[threading.Thread] = set()
        self._invocations_lock = threading.Lock()

    def start(self) -> None:
        for subscription in self.subscriptions:
            queue_url = self._sqs.get_queue_url(QueueName=subscription.queue_name)["QueueUrl"]
            poller = threading.Thread(
                target=self._poll, args=(subscription, queue_url), name=f"pump-{subscription.function_name}"
            )
            poller.start()
            self._pollers.append(poller)

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop receiving; give running handlers `grace_s` to finish (their messages return to the queue)."""
        self._stopping.set()
        for poller in self._pollers:
            poller.join()
        deadline = time.monotonic() + grace_s
        with self._invocations_lock:
            running = list(self._invocations)
        for invocation in running:
            invocation.join(max(0.0, deadline - time.monotonic()))

    def _poll(self, subscription: SqsSubscription, queue_url: str) -> None:
        queue_arn = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        free = threading.BoundedSemaphore(subscription.concurrency)
        while not self._stopping.is_set():
            if not free.acquire(timeout=RECEIVE_WAIT_S):
                continue
            # As Lambda's pollers do, one receive takes up to 10 messages and hands them out in batches of the
            # source's size, one invocation each, as far as free concurrency allows (the first permit is held).
            permits = 1
            while permits * subscription.batch_size < SQS_MAX_RECEIVE and free.acquire(blocking=False):
                permits += 1
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=min(SQS_MAX_RECEIVE, permits * subscription.batch_size),
                    WaitTimeSeconds=RECEIVE_WAIT_S,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:
                logger.exception("receiving from %s failed", subscription.queue_name)
                messages = []
                self._stopping.wait(RECEIVE_WAIT_S)
            batches = [messages[start:start + subscription.batch_size]
                       for start in range(0, len(messages), subscription.batch_size)]
            for _ in range(permits - len(batches)):
                free.release()
            for batch in batches:
                invocation = threading.Thread(
                    target=self._invoke,
                    args=(subscription, queue_url, queue_arn, batch, free),
                    name=f"lambda-{subscription.function_name}",
                    daemon=True,  # a hung handler must not keep the stack from exiting
                )
                with self._invocations_lock:
                    self._invocations.add(invocation)
                invocation.start()

    def _invoke(
        self,
        subscription: SqsSubscription,
        queue_url: str,
        queue_arn: str,
        messages: list[dict[str, Any]],
        free: threading.BoundedSemaphore,
    ) -> None:
        try:
            event = {"Records": [lambda_record(message, queue_arn, self._region) for message in messages]}
            try:
                result = invoke(self._app, self._config, self._stage, subscription.function_name, event)
            except Exception:
                logger.exception(
                    "%s raised; its %d message(s) return after their visibility timeout",
                    subscription.function_name,
                    len(messages),
                )
                return
            failed = failed_message_ids(result, {message["MessageId"] for message in messages})
            done = [message for message in messages if message["MessageId"] not in failed]
            if done:
                self._sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(number), "ReceiptHandle": message["ReceiptHandle"]}
                        for number, message in enumerate(done)
                    ],
                )
        except Exception:
            logger.exception("deleting %s's processed messages failed", subscription.function_name)
        finally:
            free.release()
            with self._invocations_lock:
                self._invocations.discard(threading.current_thread())


@contextmanager
def pumping(app: Chalice, config: Config | None, stage: str, sqs: Any, region: str) -> Iterator[SqsPump]:
    pump = SqsPump(app, config, stage, sqs_subscriptions(app, config, stage), sqs, region)
    pump.start()
    try:
        yield pump
    finally:
        pump.stop()
