"""Webhooks in-process: the app's routes and the state machine on moto, a wiring on a clock the test moves (at the
real time to begin with, so `standardwebhooks` accepts the timestamps), receivers on 127.0.0.1 that answer from a
script, and a driver that hands the webhook queue's messages to the delivery as Lambda would, moving the clock to
each message's due time instead of waiting for it."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib import aws, queues, wiring
from chalicelib.ark.client import VolcVideoClient
from chalicelib.media import storage
from chalicelib.resources import WEBHOOK_DELIVERY
from chalicelib.settings import get_settings
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.webhooks.events import parse_message
from chalicelib.wiring import Wiring
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import DEMO, IMAGE_TASK
from tests.lane_fixtures import lambda_record


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering each request with the next scripted `(status, headers, body)` (then
    204), keeping every request it got."""

    server: ThreadingHTTPServer
    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/arkflow"

    def answer(self, *answers: int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]) -> None:
        for answer in answers:
            status, headers, body = (answer, {}, b"") if isinstance(answer, int) else (*answer, b"")[:3]
            self.answers.append((status, headers, body))


def _handler(receiver_of: Callable[[], Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = receiver_of()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, headers, answer = receiver.answers.pop(0) if receiver.answers else (204, {}, b"")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    """Makes receivers; each is stopped at the end."""
    made: list[Receiver] = []

    def make() -> Receiver:
        holder: list[Receiver] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(lambda: holder[0]))
        receiver = Receiver(server)
        holder.append(receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def receiver(receivers: Callable[[], Receiver]) -> Receiver:
    return receivers()


class UndelayedSqs:
    """The app's SQS client, but every message is visible at once (moto would hold a delayed one for real seconds):
    the delay each send asked for is kept, and the driver moves the clock instead."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.delays: list[int] = []

    def send_message(self, **arguments: Any) -> Any:
        self.delays.append(int(arguments.get("DelaySeconds", 0)))
        return self._inner.send_message(**{**arguments, "DelaySeconds": 0})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class Hooks:
    api: Api
    clock: FrozenClock
    services: Wiring
    sqs: UndelayedSqs

    def create(self, user: tuple[str, str] = DEMO, **fields: Any) -> str:
        response = self.api.request("POST", "/api/tasks", {**IMAGE_TASK, **fields}, as_user=user)
        assert response.status_code == 201, response.body
        return response.data["id"]

    def task(self, task_id: str) -> TaskRecord:
        return TaskRecord.get(task_id, consistent_read=True)

    def start(self, task_id: str) -> TaskRecord:
        return statemachine.transition(self.task(task_id), statemachine.RUNNING, clock=self.clock)

    def succeed(self, task_id: str) -> TaskRecord:
        """Run and succeed the task, its result stored in the bucket (its URL is presigned in the payload)."""
        bucket = get_settings().media_bucket
        ref = storage.store_bytes(aws.s3(), bucket, f"tasks/{task_id}/results/image-0.jpg", b"\xff\xd8jpeg",
                                  "image/jpeg")
        task = self.start(task_id) if self.task(task_id).status == statemachine.QUEUED else self.task(task_id)
        return statemachine.transition(task, statemachine.SUCCEEDED, actions=[TaskRecord.result_urls.set([ref])],
                                       clock=self.clock)

    def messages(self) -> list[dict[str, Any]]:
        """The webhook queue's visible messages, as Lambda hands them over."""
        answer = aws.sqs().receive_message(QueueUrl=queues.url_of(aws.sqs(), WEBHOOK_DELIVERY),
                                           MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0)
        return [lambda_record(message) for message in answer.get("Messages", [])]

    def deliver(self, max_rounds: int = 200) -> int:
        """Hand every message to the delivery until none is left, the clock moved to each one's due time (the
        message deleted as Lambda deletes a handled one); returns the messages handled."""
        handled = 0
        for _ in range(max_rounds):
            records = self.messages()
            if not records:
                return handled
            for record in records:
                due = parse_message(record["body"]).not_before
                if due > self.clock.now():
                    self.clock.advance(due - self.clock.now())
                answer = self.services.webhook_delivery.handle([record])
                assert answer == {"batchItemFailures": []}, answer
                aws.sqs().delete_message(QueueUrl=queues.url_of(aws.sqs(), WEBHOOK_DELIVERY),
                                         ReceiptHandle=record["receiptHandle"])
                handled += 1
        raise AssertionError(f"messages still coming after {max_rounds} rounds")

    def secret(self, user: tuple[str, str] = DEMO) -> str:
        response = self.api.request("GET", "/api/webhooks/secret", as_user=user)
        assert response.status_code == 200, response.body
        return response.data["secret"]

    def deliveries(self, task_id: str, user: tuple[str, str] = DEMO) -> Any:
        return self.api.request("GET", f"/api/webhooks/deliveries?task_id={task_id}", as_user=user)


def payload(received: Received) -> dict[str, Any]:
    return json.loads(received.body)


@pytest.fixture
def hooks(api: Api) -> Iterator[Hooks]:
    clock = FrozenClock()
    sqs = UndelayedSqs(aws.sqs())
    settings = dataclasses.replace(get_settings(), webhook_allow_loopback=True)
    # Cancelling asks the video service, which needs an Ark client: nothing listens there (no task reaches Ark).
    services = Wiring(settings, clock=clock, sqs=sqs, video_client=VolcVideoClient("http://127.0.0.1:9", "sk-hooks"))
    wiring.install(services)
    yield Hooks(api, clock, services, sqs)
    wiring.install(None)
