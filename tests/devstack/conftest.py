"""Fixtures for tests of the local stack's pieces (the whole stack is `local_stack` in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.moto_server import MotoServer, start_moto_server


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """The serialized moto server (`devstack.moto_server`) on a free port, shared by one module's tests."""
    with start_moto_server() as server:
        yield server
