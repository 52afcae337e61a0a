"""Fetching Ark's result files: only from Ark's result hosts, never through a redirect, capped in size, and within
a total deadline that holds inside every socket operation.

httpx bounds each phase of a request (connect, each read), not the whole: a server trickling a byte now and then
keeps every read alive, so a download could outlast the Lambda. Here every connect, TLS handshake, read and write
waits no longer than the copy's `Budget` has left (`chalicelib.deadline_transport`), and one that starts after it
ran out raises `OutOfTime`; so a copy ends by its deadline however slowly the bytes come.

Which hosts count as Ark's is a setting (`ARK_RESULT_HOSTS`, `Settings.ark_result_hosts`): `*.volces.com` (a
subdomain of it, https only), `host.example.com` (that host, https only) or a whole origin such as
`http://127.0.0.1:9000` (that scheme, host and port: how the local stack lets in its simulator).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from chalicelib.deadline_transport import DeadlineTransport
from chalicelib.settings import Settings

Monotonic = Callable[[], float]

# Each phase of a download: a read may stall this long between chunks of a large video (the budget cuts it short).
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# What is read before deciding what a file is: enough for every format's signature.
SNIFF_BYTES = 512


class OutOfTime(Exception):
    """The copy's time budget ran out; raised from inside a streamed upload, it makes S3's transfer abort."""

    def __init__(self) -> None:
        super().__init__("the copy ran out of time")


class Refused(Exception):
    """A result that must not be stored, whatever a retry would bring: a host not Ark's, a redirect, a file too
    large, a type the task cannot produce."""


@dataclass(frozen=True)
class Budget:
    """The time a copy may use: until `deadline`, a `monotonic()` value."""

    deadline: float
    monotonic: Monotonic = time.monotonic

    def left_s(self) -> float:
        return self.deadline - self.monotonic()

    def check(self, needed_s: float = 0.0) -> None:
        """Stop (raise OutOfTime) once the deadline passed, or would pass within the `needed_s` about to be spent."""
        if self.left_s() <= needed_s:
            raise OutOfTime()


def budgeted_transport(budget: Budget) -> httpx.BaseTransport:
    """httpx's own transport on connections whose every socket operation ends by the budget's deadline; one that
    would start after it raises OutOfTime."""
    return DeadlineTransport(lambda: budget.deadline, clock=budget.monotonic,
                             expired=lambda _phase: OutOfTime())


@dataclass(frozen=True)
class ResultHosts:
    """Where results may be fetched from (see the module's docstring for the forms an entry takes)."""

    entries: tuple[str, ...]

    def allow(self, url: httpx.URL) -> bool:
        return any(_matches(entry.strip().lower(), url) for entry in self.entries)


def _matches(entry: str, url: httpx.URL) -> bool:
    if "://" in entry:
        origin = httpx.URL(entry)
        return (url.scheme, url.host, _port(url)) == (origin.scheme, origin.host, _port(origin))
    if url.scheme != "https" or _port(url) != 443:
        return False
    return url.host.endswith(entry[1:]) if entry.startswith("*.") else url.host == entry


def _port(url: httpx.URL) -> int | None:
    return url.port or {"http": 80, "https": 443}.get(url.scheme)


@dataclass
class Download:
    """A response being streamed: its first bytes (to tell what it is), then all of it chunk by chunk."""

    head: bytes
    _rest: Iterator[bytes]

    def chunks(self) -> Iterator[bytes]:
        if self.head:
            yield self.head
        yield from self._rest


class Downloads:
    """Makes the HTTP client of each copy (bounded by its budget) and checks what it fetches."""

    def __init__(self, hosts: ResultHosts, *, timeout: httpx.Timeout = DOWNLOAD_TIMEOUT,
                 transport_for: Callable[[Budget], httpx.BaseTransport] = budgeted_transport) -> None:
        self.hosts = hosts
        self.timeout = timeout
        self._transport_for = transport_for

    @classmethod
    def from_settings(cls, settings: Settings) -> Downloads:
        return cls(ResultHosts(settings.ark_result_hosts))

    @contextlib.contextmanager
    def client(self, budget: Budget) -> Iterator[httpx.Client]:
        """One copy's client: its connections are reused between the files of a task, never past the copy."""
        with httpx.Client(transport=self._transport_for(budget), timeout=self.timeout, follow_redirects=False,
                          headers={"Accept-Encoding": "identity"}) as client:
            yield client

    @contextlib.contextmanager
    def fetch(self, client: httpx.Client, url: str, max_bytes: int) -> Iterator[Download]:
        """Stream `url`. Refused for a host not Ark's, any redirect and more than `max_bytes` (announced or sent);
        httpx's errors for the rest (an error status, a broken connection), which a retry may cure."""
        parsed = httpx.URL(url)
        if not self.hosts.allow(parsed):
            raise Refused(f"{parsed.scheme}://{parsed.host} is not one of Ark's result hosts")
        with client.stream("GET", parsed) as response:
            if response.is_redirect:
                raise Refused(f"the result host answered {response.status_code} (a redirect)")
            response.raise_for_status()
            announced = int(response.headers.get("content-length") or 0)
            if announced > max_bytes:
                raise Refused(f"the result is {announced} bytes, more than the {max_bytes} allowed")
            rest = _capped(response.iter_bytes(), max_bytes)
            head = b""
            for chunk in rest:
                head += chunk
                if len(head) >= SNIFF_BYTES:
                    break
            yield Download(head, rest)


def _capped(chunks: Iterator[bytes], max_bytes: int) -> Iterator[bytes]:
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise Refused(f"the result is more than the {max_bytes} bytes allowed")
        yield chunk
