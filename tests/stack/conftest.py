"""Fixtures for tests of the local stack, and `local_stack` for end-to-end tests against the real thing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.moto_server import MotoServer, start_moto_server
from devstack.testing import LocalStack, launch_local_stack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """`python -m devstack` on free ports with a unique prefix, once per test process.

    Yields `api_url`, `ws_url`, `web_url`, `sim_url` (admin root) / `ark_base_url`, `moto_url`, `admin` and
    `demo` credentials, and `output()` (what the stack printed). Stopped with SIGTERM at the end.
    """
    with launch_local_stack(tmp_path_factory.mktemp("local-stack") / "stack.log") as stack:
        yield stack


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """The serialized moto server (`devstack.moto_server`) on a free port, shared by one module's tests."""
    with start_moto_server() as server:
        yield server
