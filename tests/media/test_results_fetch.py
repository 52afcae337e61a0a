"""What the results copier fetches and how long it may take: Ark's result hosts only, no redirect, capped sizes,
only the media types a task produces (told from the bytes), and a deadline that holds inside every read, however
slowly a server sends."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
import pytest
import requests
from PIL import Image

from chalicelib.media import results, storage
from chalicelib.media.downloads import Downloads, ResultHosts
from chalicelib.media.results import PART_BYTES, copy_results
from chalicelib.store.records import TaskRecord
from tests.api_client import Api
from tests.factories import DEMO
from tests.media.test_results import (
    ARK,
    BUCKET,
    MP4_SIGNATURE,
    FakeArkStorage,
    calls_to,
    downloads_from,
    jpeg,
    succeeded_task,
    unfinished_uploads,
)
from tests.polling import wait_for
from tests.tasks.test_delete import stored_keys

# The part of a video sent at once: one multipart part and a little more, so the upload is under way.
FAST_BYTES = PART_BYTES + 16 * 1024
TRICKLE_PIECE, TRICKLE_EVERY_S, TRICKLE_PIECES = 1024, 0.02, 500  # 50 KB/s for up to 10 s: < 1 MiB in all


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def error_of(task_id: str) -> Any:
    return TaskRecord.get(task_id, consistent_read=True).results_copy_error


# --- a slow link, for real: a local server trickling bytes -------------------------------------------------


@dataclass
class SlowServer:
    """Serves `/video.mp4` (a multipart part's worth at once, then a trickle) and `/stalled-headers` (its status
    line a byte at a time). Each stops when the client goes away or the trickle ends; `left_mid_trickle` says the
    client went away first."""

    url: str = ""
    left_mid_trickle: threading.Event = field(default_factory=threading.Event)
    trickle_ended: threading.Event = field(default_factory=threading.Event)
    # Called once the first trickled byte is out: the client is waiting in a read.
    on_trickle: Callable[[], None] = lambda: None

    def client_left_first(self) -> bool:
        """Whether the client went away while the bytes still trickled (the server notices at its next write)."""
        wait_for(lambda: self.left_mid_trickle.is_set() or self.trickle_ended.is_set())
        return not self.trickle_ended.is_set()


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    state = SlowServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            try:
                if self.path == "/video.mp4":
                    self._video()
                else:
                    self._trickle(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"p" * 400 + b"\r\n")
            except OSError:  # the client went away
                state.left_mid_trickle.set()

        def _video(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(FAST_BYTES + 4 * PART_BYTES))
            self.end_headers()
            self.wfile.write(MP4_SIGNATURE + bytes(FAST_BYTES - len(MP4_SIGNATURE)))
            self._trickle(bytes(TRICKLE_PIECE * TRICKLE_PIECES))

        def _trickle(self, data: bytes) -> None:
            piece = max(1, len(data) // TRICKLE_PIECES)
            for start in range(0, len(data), piece):
                self.wfile.write(data[start:start + piece])
                self.wfile.flush()
                if start == 0:
                    state.on_trickle()
                time.sleep(TRICKLE_EVERY_S)  # the slow link itself, not the test waiting
            state.trickle_ended.set()
            self.connection.shutdown(socket.SHUT_RDWR)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    thread.join(timeout=10)


class ShiftedClock:
    """`time.monotonic()`, jumped forward on demand: the deadline comes at a chosen point of the copy, however long
    the machine took to get there."""

    def __init__(self) -> None:
        self.shift = 0.0

    def now(self) -> float:
        return time.monotonic() + self.shift

    def leave(self, deadline: float, seconds: float) -> None:
        self.shift = deadline - time.monotonic() - seconds


def slow_downloads(server: SlowServer) -> Downloads:
    # Each read may wait 30 s, as in production: only the deadline can end the copy early.
    return Downloads(ResultHosts((server.url,)), timeout=httpx.Timeout(30.0, connect=5.0))


def test_a_trickling_video_is_stopped_at_the_deadline_inside_a_read_and_its_upload_aborted(
    api: Api, slow_server: SlowServer
) -> None:
    task = succeeded_task(api, video_url=f"{slow_server.url}/video.mp4")
    s3 = boto3.client("s3")
    started, aborted = calls_to(s3, "CreateMultipartUpload"), calls_to(s3, "AbortMultipartUpload")
    clock, deadline = ShiftedClock(), time.monotonic() + 600
    # Once the upload is under way (a part was read), half a second of the copy's time is left.
    s3.meta.events.register("after-call.s3.CreateMultipartUpload", lambda **_: clock.leave(deadline, 0.5))

    copy_results(task, s3=s3, downloads=slow_downloads(slow_server), bucket=BUCKET, deadline=deadline,
                 monotonic=clock.now, sleep=lambda _: None)

    assert error_of(task.task_id)["code"] == "results_copy_out_of_time"
    assert len(started) == 1 and len(aborted) == 1 and unfinished_uploads() == []
    assert stored_keys(task.task_id) == []
    assert TaskRecord.get(task.task_id).video_url == f"{slow_server.url}/video.mp4"
    # It stopped while the bytes still trickled in: between 1 MiB chunks it would have waited for the trickle.
    assert slow_server.client_left_first()


def test_response_headers_trickling_in_cannot_outlast_the_deadline(api: Api, slow_server: SlowServer) -> None:
    task = succeeded_task(api, result_urls=[f"{slow_server.url}/stalled-headers"])
    clock, deadline = ShiftedClock(), time.monotonic() + 600
    # Once the status line has begun to trickle in (the request was sent), the copy's time is up.
    slow_server.on_trickle = lambda: clock.leave(deadline, 0)

    copy_results(task, s3=boto3.client("s3"), downloads=slow_downloads(slow_server), bucket=BUCKET,
                 deadline=deadline, monotonic=clock.now, sleep=lambda _: None)

    assert error_of(task.task_id)["code"] == "results_copy_out_of_time"
    assert slow_server.client_left_first()


# --- where from, and what -----------------------------------------------------------------------------------


@pytest.fixture
def ark_storage() -> FakeArkStorage:
    return FakeArkStorage()


def answering(handler: Callable[[httpx.Request], httpx.Response], hosts: tuple[str, ...] = ("ark-results.example.com",)
              ) -> tuple[Downloads, list[str]]:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return handler(request)

    return Downloads(ResultHosts(hosts), transport_for=lambda _: httpx.MockTransport(record)), seen


@pytest.mark.parametrize("url", [
    "https://attacker.example.net/image.jpeg",     # not Ark's host
    "http://ark-results.example.com/image.jpeg",   # Ark's host, not https
    "https://ark-results.example.com:8443/image.jpeg",
    "https://169.254.169.254/latest/meta-data",
])
def test_nothing_is_fetched_from_anywhere_but_arks_result_hosts_over_https(api: Api, url: str) -> None:
    task = succeeded_task(api, result_urls=[url])
    downloads, seen = answering(lambda _: httpx.Response(200, content=jpeg("/x")))

    copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET)

    assert seen == []
    assert error_of(task.task_id)["code"] == "results_copy_refused"
    assert TaskRecord.get(task.task_id).result_urls == [url]


def test_a_redirect_is_not_followed(api: Api) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg"])
    downloads, seen = answering(lambda _: httpx.Response(302, headers={"Location": f"{ARK}/elsewhere.jpeg"}))

    copy_results(task, s3=boto3.client("s3"), downloads=downloads, bucket=BUCKET, sleep=lambda _: None)

    assert seen == [f"{ARK}/image-0.jpeg"]
    assert error_of(task.task_id)["code"] == "results_copy_refused"


def test_a_result_larger_than_allowed_is_refused_announced_or_not(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(results.MAX_RESULT_BYTES, "video", PART_BYTES + 1024)
    too_long = MP4_SIGNATURE + bytes(PART_BYTES + 4096)
    announced = succeeded_task(api, video_url=f"{ARK}/announced.mp4")
    unannounced = succeeded_task(api, video_url=f"{ARK}/unannounced.mp4")

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/announced.mp4":
            return httpx.Response(200, content=too_long)  # with its Content-Length
        return httpx.Response(200, content=iter([too_long[:PART_BYTES], too_long[PART_BYTES:]]))  # chunked

    downloads, _ = answering(serve)
    s3 = boto3.client("s3")
    started, aborted = calls_to(s3, "CreateMultipartUpload"), calls_to(s3, "AbortMultipartUpload")
    for task in (announced, unannounced):
        copy_results(task, s3=s3, downloads=downloads, bucket=BUCKET, sleep=lambda _: None)
        assert error_of(task.task_id)["code"] == "results_copy_refused"
        assert stored_keys(task.task_id) == []
    assert len(started) == len(aborted) == 1 and unfinished_uploads() == []  # the unannounced one was under way


def test_what_is_stored_is_what_the_bytes_are_and_only_what_the_task_can_produce(api: Api) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.domain)"/>'
    bodies = {"/svg.jpeg": (svg, "image/jpeg"), "/html": (b"<html><script>alert(1)</script></html>", "image/png"),
              "/png-called-html": (png(), "text/html")}
    downloads, _ = answering(lambda request: httpx.Response(
        200, content=bodies[request.url.path][0], headers={"content-type": bodies[request.url.path][1]}))
    s3 = boto3.client("s3")
    refused = [succeeded_task(api, result_urls=[f"{ARK}/svg.jpeg"]), succeeded_task(api, result_urls=[f"{ARK}/html"])]
    honest = succeeded_task(api, result_urls=[f"{ARK}/png-called-html"])

    for task in [*refused, honest]:
        copy_results(task, s3=s3, downloads=downloads, bucket=BUCKET, sleep=lambda _: None)

    for task in refused:
        assert error_of(task.task_id)["code"] == "results_copy_refused" and stored_keys(task.task_id) == []
    [ref] = TaskRecord.get(honest.task_id).result_urls
    bucket, key = storage.split_s3_ref(ref)
    assert key.endswith("/image-0.png") and s3.get_object(Bucket=bucket, Key=key)["ContentType"] == "image/png"


def test_stored_results_are_handed_out_as_attachments_of_a_safe_type_whatever_the_object_says(
    api: Api, ark_storage: FakeArkStorage
) -> None:
    task = succeeded_task(api, result_urls=[f"{ARK}/image-0.jpeg"])
    copy_results(task, s3=boto3.client("s3"), downloads=downloads_from(ark_storage), bucket=BUCKET)
    # An object stored before types were checked: script under an image's key.
    legacy = f"tasks/{task.task_id}/results/legacy-0.png"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=legacy, Body=b"<svg onload=alert(1)/>",
                                  ContentType="image/svg+xml")
    stored = TaskRecord.get(task.task_id)
    statemachine_refs = [*stored.result_urls, storage.s3_ref(BUCKET, legacy)]

    for ref, expected_type in zip(statemachine_refs, ("image/jpeg", "image/png"), strict=True):
        answer = requests.get(storage.display_url(boto3.client("s3"), ref), timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == expected_type
        disposition = answer.headers["Content-Disposition"]
        assert disposition.startswith("attachment;") and f"arkflow-{task.task_id}-" in disposition

    body = api.request("GET", f"/api/tasks/{task.task_id}", as_user=DEMO).data
    assert "response-content-disposition=attachment" in body["result_urls"][0]
