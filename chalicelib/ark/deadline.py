"""A total deadline for every Ark call (docs/ark.md, "Deadlines").

httpx limits each phase of a request (connect, each read, each write, the wait for a pooled connection), never
the whole: a server that sends a byte before every read timeout keeps a call going as long as it likes. So every
socket operation of an Ark call here waits at most until the call's deadline, whatever the phase:

* a client gives each call a budget of its own, and `call_deadline(at)` bounds every call made inside it further
  (a worker's remaining Lambda time, less the room it needs to record the outcome);
* the clients' transport (`deadline_transport`, a `chalicelib.deadline_transport.DeadlineTransport`) reads the running
  call's deadline at every connect, read and write, and raises httpcore's timeout for that phase once it has
  passed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import httpx

from chalicelib.deadline_transport import DeadlineTransport

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


def deadline_transport() -> httpx.HTTPTransport:
    """The Ark clients' transport: connections that wait on the network only until the running call's deadline,
    past which each phase fails as httpx's timeout of that phase (an `ArkTransportError` to the client)."""
    return DeadlineTransport(_running_call.get)
