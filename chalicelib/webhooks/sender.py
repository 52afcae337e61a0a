"""One webhook attempt: a POST to the task's URL that reaches only vetted addresses (`addresses`), follows no
redirect, reads at most `MAX_RESPONSE_BYTES` of the answer and ends within `TOTAL_S` whatever the receiver does
(`chalicelib.deadline_transport` bounds every connect, TLS handshake, read and write), and what came of it."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from chalicelib.deadline_transport import DeadlineTransport
from chalicelib.webhooks.addresses import PinnedBackend, Resolver, UnsafeDestination, system_resolver, url_problem

Monotonic = Callable[[], float]

TIMEOUT = httpx.Timeout(5.0, connect=5.0)
TOTAL_S = 10.0
# What is read of an answer (the rest is left unread and the connection closed): a receiver only needs to say 2xx.
MAX_RESPONSE_BYTES = 64 * 1024
# What an attempt's record keeps of a refusal's text.
MAX_ERROR_CHARS = 300
USER_AGENT = "arkflow-webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What one attempt came to: the receiver's status (None: no answer), how long it took, and why it failed."""

    status_code: int | None
    duration_ms: int
    error: str | None = None
    retry_after_s: float | None = None
    # Whether trying again could change anything: no answer in time, no connection, a 5xx or a 429.
    retryable: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def parse_retry_after(value: str | None, now: float) -> float | None:
    """A `Retry-After` header's wait in seconds: delta-seconds or an HTTP date (None when absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now) if when.tzinfo is not None else None


def read_capped(response: httpx.Response) -> str:
    """Up to MAX_RESPONSE_BYTES of the answer, as text (an answer that goes on is cut, never read through)."""
    kept = bytearray()
    try:
        for chunk in response.iter_bytes():
            kept += chunk[:MAX_RESPONSE_BYTES - len(kept)]
            if len(kept) >= MAX_RESPONSE_BYTES:
                break
    except httpx.HTTPError:
        pass  # the status is what counts; a body cut short says nothing more
    return kept.decode("utf-8", "replace")


def _text(value: str) -> str:
    printable = "".join(char if char.isprintable() else " " for char in value)
    return printable[:MAX_ERROR_CHARS]


class WebhookSender:
    def __init__(self, *, allow_loopback: bool, resolver: Resolver = system_resolver,
                 timeout: httpx.Timeout = TIMEOUT, total_s: float = TOTAL_S,
                 monotonic: Monotonic = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.allow_loopback = allow_loopback
        self._resolver = resolver
        self._timeout = timeout
        self._total_s = total_s
        self._monotonic = monotonic
        self._wall_clock = wall_clock

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        started = self._monotonic()

        def answer(status: int | None, error: str | None, *, retryable: bool = False,
                   retry_after_s: float | None = None) -> Answer:
            elapsed_ms = math.ceil((self._monotonic() - started) * 1000)
            return Answer(status, elapsed_ms, _text(error) if error else None, retry_after_s, retryable)

        problem = url_problem(url, allow_loopback=self.allow_loopback)
        if problem is not None:
            return answer(None, f"the webhook URL {problem}")
        deadline = started + self._total_s
        transport = DeadlineTransport(lambda: deadline, clock=self._monotonic, network_backend=PinnedBackend(
            self._resolver, allow_loopback=self.allow_loopback))
        # trust_env=False: no proxy from the environment, which would connect in arkflow's place to anything.
        with httpx.Client(transport=transport, timeout=self._timeout, follow_redirects=False,
                          trust_env=False) as client:
            try:
                with client.stream("POST", url, content=body,
                                   headers={**headers, "content-type": "application/json",
                                            "user-agent": USER_AGENT}) as response:
                    text = read_capped(response)
            except UnsafeDestination as refused:
                return answer(None, str(refused))
            except httpx.TimeoutException:
                return answer(None, f"no answer within {self._total_s:g} s", retryable=True)
            except httpx.TransportError as failed:
                return answer(None, f"could not connect ({type(failed).__name__})", retryable=True)
        status = response.status_code
        if 200 <= status < 300:
            return answer(status, None)
        error = f"answered {status}" + (f": {text}" if text.strip() else "")
        if 300 <= status < 400:
            error = f"answered {status} (redirects are not followed)"
        retryable = status >= 500 or status == 429
        wait = parse_retry_after(response.headers.get("retry-after"), self._wall_clock()) if retryable else None
        return answer(status, error, retryable=retryable, retry_after_s=wait)
