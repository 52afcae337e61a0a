"""The task lifecycle keeps its promises under any interleaving of users, workers, Ark, AWS faults and time.

The budget comes from the Hypothesis profile (`tests/conftest.py`): small in `make test`, long with
`HYPOTHESIS_PROFILE=deep` (`make test-deep`).
"""

from __future__ import annotations

import os

import pytest
from hypothesis.stateful import run_state_machine_as_test

from tests.lifecycle.harness import Environment
from tests.lifecycle.model import LifecycleModel

# The whole run, shrinking included: generous on the small profiles, none on the deep one (it runs for long).
RUN_TIMEOUT_S = 0 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 900


@pytest.mark.hypothesis  # what `make test-deep` selects
@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_the_task_lifecycle_keeps_its_promises(lifecycle: Environment) -> None:
    run_state_machine_as_test(lambda: LifecycleModel(lifecycle))
