"""Waiting for work done elsewhere (a server, a thread, a simulator): poll with a deadline, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.02) -> T:
    """Poll until `predicate()` is truthy and return what it returned; fail after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
    return result
