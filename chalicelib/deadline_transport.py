"""An httpx transport whose every socket operation ends by a deadline: the one mechanism behind the total deadline
of each Ark call (`chalicelib.ark.deadline`) and of each results download (`chalicelib.media.downloads`).

httpx limits each phase of a request (connect, each read, each write), never the whole: a server that sends a byte
before every read timeout keeps a request going as long as it likes. On this transport's connections every
connect, TLS handshake, read, write and back-off sleep waits at most until the deadline its user gives (asked
afresh at each operation, so one transport may serve calls with different deadlines), and one that would start
after it raises the error its user chose.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

# The current deadline (a value of `Clock`), or None for no bound beyond each phase's own timeout.
Deadline = Callable[[], float | None]
Clock = Callable[[], float]
# What to raise once the deadline passed, given the httpcore timeout of the phase it passed in.
Expired = Callable[[type[httpcore.TimeoutException]], Exception]


def phase_timeout(phase: type[httpcore.TimeoutException]) -> Exception:
    """httpcore's own timeout for the phase, which httpx maps to its `ConnectTimeout`, `ReadTimeout`..."""
    return phase("the deadline passed")


class _Limits:
    def __init__(self, deadline: Deadline, clock: Clock, expired: Expired) -> None:
        self._deadline = deadline
        self._clock = clock
        self._expired = expired

    def timeout(self, timeout: float | None, phase: type[httpcore.TimeoutException]) -> float | None:
        """A socket operation's timeout cut to what is left of the deadline (the user's error when nothing is)."""
        deadline = self._deadline()
        if deadline is None:
            return timeout
        left = deadline - self._clock()
        if left <= 0:
            raise self._expired(phase)
        return left if timeout is None else min(timeout, left)

    def sleep(self, seconds: float) -> None:
        deadline = self._deadline()
        if deadline is not None and deadline - self._clock() <= seconds:
            raise self._expired(httpcore.ConnectTimeout)
        time.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, limits: _Limits) -> None:
        self._inner = inner
        self._limits = limits

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._limits.timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._limits.timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        secured = self._inner.start_tls(ssl_context, server_hostname,
                                        self._limits.timeout(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(secured, self._limits)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, limits: _Limits, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._limits = limits

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, self._limits.timeout(timeout, httpcore.ConnectTimeout),
                                         local_address, socket_options)
        return _DeadlineStream(stream, self._limits)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, self._limits.timeout(timeout, httpcore.ConnectTimeout),
                                                 socket_options)
        return _DeadlineStream(stream, self._limits)

    def sleep(self, seconds: float) -> None:
        self._limits.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, or `SSL_CERT_FILE`), made once per process: loading the CAs takes
    tens of milliseconds, and each webhook delivery and Ark client makes a transport, which made two. One context
    serves any number of connections and threads."""
    return httpx.create_ssl_context()


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (its pool limits, TLS and error mapping) on connections that wait on the network only
    until `deadline()`, read on `clock`; past it, `expired(phase)` is raised (httpcore's timeout of the phase by
    default, which httpx reports as its own). `network_backend` opens the sockets (httpcore's own by default)."""

    def __init__(self, deadline: Deadline, *, clock: Clock = time.monotonic, expired: Expired = phase_timeout,
                 network_backend: httpcore.NetworkBackend | None = None) -> None:
        tls = _tls_context()
        super().__init__(verify=tls)
        limits = httpx.Limits()
        # httpx's transport takes no network backend; the httpcore pool it wraps does: the same pool, with one.
        self._pool = httpcore.ConnectionPool(
            ssl_context=tls,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(_Limits(deadline, clock, expired), network_backend),
        )
