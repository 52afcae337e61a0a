"""The lifecycle model's environment: made once per test, reset per Hypothesis example."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.lifecycle.harness import Environment


@pytest.fixture
def lifecycle(monkeypatch: pytest.MonkeyPatch) -> Iterator[Environment]:
    # The faults the model injects make the code log errors by the thousand; a failure's report is its example.
    logger = logging.getLogger("chalicelib")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with Environment(monkeypatch).running() as environment:
            yield environment
    finally:
        logger.setLevel(level)
