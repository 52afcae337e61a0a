"""Fixtures for the Ark clients and simulator: simulators on free ports, a callback receiver, tiny images."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest
from PIL import Image

from arksim.clock import SimClock
from arksim.server import RunningSimulator
from arksim.testing import running_simulator

API_KEY = "sk-test-0123456789abcdef"
IMAGE_MODEL = "doubao-seedream-4-5-251128"
VIDEO_MODEL = "doubao-seedance-1-0-pro-250528"
# Fast timings for tests; individual tests override what they exercise.
FAST = {"image_latency_s": 0.0, "video_queue_s": 0.0, "video_run_s": 0.2, "callback_retry_delay_s": 0.05}
START = 1_800_000_000.0


def data_uri(width: int, height: int, fmt: str = "png", mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format=fmt.upper())
    return f"data:image/{fmt};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def ark() -> Iterator[RunningSimulator]:
    """A fresh simulator on the real clock with fast timings."""
    with running_simulator(**FAST) as running:
        yield running


@pytest.fixture
def frozen_ark() -> Iterator[RunningSimulator]:
    """A simulator whose clock moves only through `advance` (video states and expiry step deterministically)."""
    with running_simulator(clock=SimClock(frozen_at=START), image_latency_s=0.0, video_queue_s=10.0,
                           video_run_s=60.0) as running:
        yield running


class CallbackReceiver:
    """Records every POST; answers 500 to the first `fail_first` requests and waits `delay_s` before answering."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = 0
        self.delay_s = 0.0
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.attempts += 1
                failing = receiver.attempts <= receiver.fail_first
                time.sleep(receiver.delay_s)
                if not failing:
                    receiver.received.append(body)
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def statuses(self) -> list[str]:
        return [body["status"] for body in self.received]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()


class Trickler:
    """A server that answers every request with `answer` (200, JSON), one byte every `gap_s`: in the headers
    (a long padding header), or in the body."""

    def __init__(self, where: Literal["headers", "body"], answer: object, gap_s: float = 0.02) -> None:
        self.requests = 0
        body = json.dumps(answer).encode()
        trickler = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                trickler.requests += 1
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                try:
                    if where == "headers":
                        self.wfile.write(head.encode())
                        self._trickle(("X-Padding: " + "a" * 150 + "\r\n\r\n").encode())
                        self.wfile.write(body)
                    else:
                        self.wfile.write((head + "\r\n").encode())
                        self._trickle(body)
                except OSError:
                    pass  # the client gave up

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.do_GET()

            def _trickle(self, data: bytes) -> None:
                for index in range(len(data)):
                    self.wfile.write(data[index:index + 1])
                    self.wfile.flush()
                    time.sleep(gap_s)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/api/v3"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
