"""The lifecycle model's environment: made once per test module, reset per Hypothesis example and per replay."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.lifecycle.harness import Environment


@pytest.fixture(scope="module")
def lifecycle() -> Iterator[Environment]:
    """Shared by a module's tests (each example and replay starts from the seeded state): making it costs a second
    or more."""
    # The faults the model injects make the code log errors by the thousand; a failure's report is its example.
    logger = logging.getLogger("chalicelib")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch, Environment(monkeypatch).running() as environment:
            yield environment
    finally:
        logger.setLevel(level)
