"""A total deadline for every Ark call (docs/ark.md, "Deadlines").

httpx limits each phase of a request (connect, each read, each write, the wait for a pooled connection), never
the whole: a server that sends a byte before every read timeout keeps a call going as long as it likes. So every
socket operation of an Ark call here waits at most until the call's deadline, whatever the phase:

* a client gives each call a budget of its own, and `call_deadline(at)` bounds every call made inside it further
  (a worker's remaining Lambda time, less the room it needs to record the outcome);
* the clients' transport (`deadline_transport`) reads the running call's deadline at every connect, read and
  write, and raises httpcore's timeout for that phase once it has passed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import httpcore
import httpx

_bound: ContextVar[float | None] = ContextVar("ark_call_bound", default=None)
_running_call: ContextVar[float | None] = ContextVar("ark_running_call_deadline", default=None)


def _earliest(first: float | None, second: float | None) -> float | None:
    return second if first is None else first if second is None else min(first, second)


@contextmanager
def call_deadline(at: float | None) -> Iterator[None]:
    """Every Ark call made inside ends by `at` (a `time.monotonic()` value; None adds no bound)."""
    token = _bound.set(_earliest(_bound.get(), at))
    try:
        yield
    finally:
        _bound.reset(token)


def deadline_for_call(budget_s: float) -> float:
    """The deadline of a call starting now with `budget_s`, within the enclosing `call_deadline`."""
    own, bound = time.monotonic() + budget_s, _bound.get()
    return own if bound is None else min(own, bound)


@contextmanager
def running_call(deadline: float) -> Iterator[None]:
    """Network operations inside (the one call being sent and read) end by `deadline`."""
    token = _running_call.set(deadline)
    try:
        yield
    finally:
        _running_call.reset(token)


def _within_deadline(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    deadline = _running_call.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the Ark call's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: object, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,  # type: ignore[arg-type]
                                                     _within_deadline(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[object] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _within_deadline(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))  # type: ignore[arg-type]

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[object] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(
            path, _within_deadline(timeout, httpcore.ConnectTimeout), socket_options))  # type: ignore[arg-type]

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport() -> httpx.HTTPTransport:
    """httpx's own transport (its limits, TLS and error mapping), on connections that wait on the network only until
    the running call's deadline."""
    transport = httpx.HTTPTransport()
    limits = httpx.Limits()
    # httpx's transport takes no network backend; the httpcore pool it wraps does.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_DeadlineBackend(),
    )
    return transport
