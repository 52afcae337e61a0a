"""moto's server with AWS's atomicity: one request at a time inside each of moto's services.

`moto_server` is always threaded and moto's backends take no lock, so parallel clients can interleave a
conditional write's check and its write, or receive one SQS message twice. Here requests are still accepted
by a threaded server (slow uploads block nobody), but each runs through its service's backend alone
(DynamoDB, SQS and the rest each have their own turn, as separate AWS services would: a slow receive from a
deep queue never holds up a DynamoDB write). An SQS long poll
(`WaitTimeSeconds`, in the JSON protocol boto3 speaks) waits outside the lock and looks again whenever a
message is sent or made visible.

    python -m devstack.moto_server --port 8005
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from devstack import moto_speedups
from devstack.processes import ChildProcess, spawn, wait_until_answers

WsgiEnviron = dict[str, Any]
StartResponse = Any
Captured = tuple[str, list[tuple[str, str]], list[bytes]]

# A visibility timeout ending wakes no waiter, so long polls also look again this often.
_LONG_POLL_RECHECK_S = 0.5
_READY_PATH = "/moto-api/config"


def _read_body(environ: WsgiEnviron) -> bytes:
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return stream.read(length) if length else b""


# Only these can make a message receivable, so only they wake waiting long polls.
_WAKES_LONG_POLLS = frozenset(
    {"SendMessage", "SendMessageBatch", "ChangeMessageVisibility", "ChangeMessageVisibilityBatch"}
)


@dataclass(frozen=True)
class _SqsRequest:
    """An SQS call in the JSON protocol (`X-Amz-Target: AmazonSQS.<Action>`), the one boto3 speaks."""

    action: str
    params: dict[str, Any]

    @property
    def long_poll_s(self) -> float:
        return float(self.params.get("WaitTimeSeconds") or 0) if self.action == "ReceiveMessage" else 0.0

    def body_returning_at_once(self) -> bytes:
        """The same receive with no wait, so it never holds the lock while it waits."""
        return json.dumps({**self.params, "WaitTimeSeconds": 0}).encode()


def _as_sqs_request(environ: WsgiEnviron, body: bytes) -> _SqsRequest | None:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if not target.startswith("AmazonSQS."):
        return None
    return _SqsRequest(target.removeprefix("AmazonSQS."), json.loads(body or b"{}"))


def _received_messages(captured: Captured) -> bool:
    status, _, chunks = captured
    if not status.startswith("2"):
        return True  # an error is an answer too
    return bool(json.loads(b"".join(chunks) or b"{}").get("Messages"))


def _service_of(environ: WsgiEnviron) -> str:
    """Which of moto's services a request goes to: DynamoDB and SQS by their JSON protocol's target, the rest
    (S3, Secrets Manager, ...) share one turn."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("AmazonSQS."):
        return "sqs"
    if target.startswith("DynamoDB_"):
        return "dynamodb"
    return "other"


class SerializedMotoApp:
    """A WSGI app running each request through moto under its service's lock, as one DynamoDB, one SQS, one S3
    would behave."""

    def __init__(self, app: Any | None = None) -> None:
        self._app = app if app is not None else DomainDispatcherApplication(create_backend_app)
        self._turns = {service: threading.Condition() for service in ("dynamodb", "sqs", "other")}
        self._turn = self._turns["sqs"]  # long polls wait on SQS's

    def __call__(self, environ: WsgiEnviron, start_response: StartResponse) -> Iterable[bytes]:
        body = _read_body(environ)  # outside the lock: a slow upload must not stall everyone
        sqs = _as_sqs_request(environ, body)
        with self._turns[_service_of(environ)]:
            if sqs is not None and sqs.long_poll_s > 0:
                captured = self._long_poll(environ, sqs)
            else:
                captured = self._run(environ, body)
                if sqs is not None and sqs.action in _WAKES_LONG_POLLS:
                    self._turn.notify_all()
        status, headers, chunks = captured
        start_response(status, headers)
        return chunks

    def _long_poll(self, environ: WsgiEnviron, receive: _SqsRequest) -> Captured:
        deadline = time.monotonic() + receive.long_poll_s
        immediate_body = receive.body_returning_at_once()
        while True:
            captured = self._run(environ, immediate_body)
            remaining = deadline - time.monotonic()
            if _received_messages(captured) or remaining <= 0:
                return captured
            self._turn.wait(min(remaining, _LONG_POLL_RECHECK_S))

    def _run(self, environ: WsgiEnviron, body: bytes) -> Captured:
        """Call moto to completion (body consumed, iterable closed) so nothing of it runs outside the lock."""
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            started.append((status, headers))

        request_environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        result = self._app(request_environ, capture)
        try:
            chunks = list(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started[-1]
        return status, headers, chunks


def serve(host: str, port: int, listen_fd: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT; `listen_fd` is an already listening socket (see `start_moto_server`)."""
    moto_speedups.install()
    server = make_server(
        host, port, SerializedMotoApp(), threaded=True, request_handler=MotoRequestHandler, fd=listen_fd
    )

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever, which runs in this very thread: do it from another.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()


@dataclass
class MotoServer:
    """A running `devstack.moto_server` child process."""

    endpoint_url: str
    process: ChildProcess
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0), repr=False)

    def reset(self) -> None:
        """Forget every table, queue, bucket and item (moto's `POST /moto-api/reset`)."""
        self._http.post(f"{self.endpoint_url}/moto-api/reset").raise_for_status()

    def stop(self) -> None:
        self._http.close()
        self.process.stop()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_moto_server(port: int = 0, host: str = "127.0.0.1", timeout_s: float = 30.0) -> MotoServer:
    """Start the serialized moto server as a subprocess and return once it answers.

    The socket is bound here and handed to the child, so `port=0` gets a free port with no race.
    """
    with socket.create_server((host, port)) as listener:
        bound_port = listener.getsockname()[1]
        process = spawn(
            "moto",
            [sys.executable, "-m", "devstack.moto_server", "--host", host, "--fd", str(listener.fileno())],
            pass_fds=[listener.fileno()],
        )
    endpoint_url = f"http://{host}:{bound_port}"
    try:
        wait_until_answers(
            endpoint_url + _READY_PATH, process, timeout_s, lambda response: response.is_success
        )
    except BaseException:
        process.stop()
        raise
    return MotoServer(endpoint_url, process)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.moto_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8005)
    parser.add_argument("--fd", type=int, default=None, help="serve on this already-listening socket")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    serve(args.host, args.port, args.fd)


if __name__ == "__main__":
    main()
