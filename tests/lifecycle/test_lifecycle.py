"""The task lifecycle keeps its promises under any interleaving of users, workers, Ark, AWS faults and time.

The budget comes from the Hypothesis profile (`tests/conftest.py`): small in `make test`, long with
`HYPOTHESIS_PROFILE=deep` (`make test-deep`).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from tests.lifecycle.harness import Environment
from tests.lifecycle.model import LifecycleModel

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
# The whole run, shrinking included: generous on the small profiles, none on the deep one (it runs for long).
RUN_TIMEOUT_S = 0 if DEEP else 900
# On the small profiles (`make test`) its share of the budget: each example drives a whole stack through up to 50
# steps and a drain: 30 keep `make test` within its budget (`make test-deep` runs the profile's thousands).
SMALL_PROFILE_EXAMPLES = 30


@pytest.mark.hypothesis  # what `make test-deep` selects
@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_the_task_lifecycle_keeps_its_promises(lifecycle: Environment) -> None:
    budget = settings() if DEEP else settings(max_examples=min(settings().max_examples, SMALL_PROFILE_EXAMPLES))
    run_state_machine_as_test(lambda: LifecycleModel(lifecycle), settings=budget)
