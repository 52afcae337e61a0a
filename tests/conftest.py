"""Shared fixtures: in-process moto with arkflow's resources, seeded users, a Chalice test client, the local stack.

The lanes' fixtures (the simulator, a wiring on a frozen clock) are `tests.lane_fixtures`; what tests send is
`tests.factories`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import pytest

from chalicelib.resources import MEDIA_BUCKET

TEST_PREFIX = "arkflow-test"

# Tests never reach AWS: fake credentials, and no endpoint override so moto's in-process mock intercepts.
for _name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL")]:
    del os.environ[_name]
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    ARKFLOW_PREFIX=TEST_PREFIX,
    TOKEN_SIGNING_KEY="test-signing-key-with-enough-length-for-hs256",
    RESULTS_BUCKET=MEDIA_BUCKET.physical_name(TEST_PREFIX),
    CORS_ORIGINS="http://127.0.0.1:8080",
    # Cheap password hashing: tests check behaviour, not argon2's cost.
    PASSWORD_HASH_TIME_COST="1",
    PASSWORD_HASH_MEMORY_KIB="1024",
)
os.environ.pop("ADMIN_USERNAME", None)
os.environ.pop("ADMIN_PASSWORD", None)

import botocore.loaders  # noqa: E402
import botocore.session  # noqa: E402
from chalice.test import Client  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from moto import mock_aws  # noqa: E402

from devstack import moto_speedups  # noqa: E402
from devstack.testing import LocalStack, launch_local_stack  # noqa: E402
from tests.api_client import Api  # noqa: E402
from tests.factories import ADMIN, DEMO, OTHER  # noqa: E402
from tests.moto_snapshot import fresh_state  # noqa: E402

pytest_plugins = ["tests.lane_fixtures"]
# In-process moto without the costs AWS never charges (devstack/moto_speedups.py).
moto_speedups.install()


@functools.cache
def _shared_loader(data_path: str | None = None) -> botocore.loaders.Loader:
    return botocore.loaders.create_loader(data_path)


# Every test makes fresh boto3 and pynamodb sessions (settings and moto change between tests), and each new botocore
# session would parse botocore's endpoint and service files again: about a second per test. The files never change
# within a run, so every session reads them through one loader, which keeps what it parsed.
botocore.session.create_loader = _shared_loader

# Hypothesis budgets: `default` and `ci` (derandomized, so a CI run replays the same examples) keep `make test` short;
# `deep` (`make test-deep`, HYPOTHESIS_PROFILE=deep) runs long. The stateful tests' runs are slow per example.
_SLOW_EXAMPLES = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("default", max_examples=100, stateful_step_count=50, **_SLOW_EXAMPLES)
settings.register_profile("ci", settings.get_profile("default"), derandomize=True, database=None, print_blob=True)
settings.register_profile("deep", max_examples=3000, stateful_step_count=80, print_blob=True, **_SLOW_EXAMPLES)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))


# The tests that run longest (a browser, the local stack's subprocesses, Hypothesis's state machines), in their
# collection order, are handed out first: `make test`'s workers take tests in this order (`--dist loadgroup` puts its
# groups first), and one of these begun last would run on alone while the other workers stand idle. Last among the
# hooks: Hypothesis marks its tests in its own.
_FIRST = ("browser", "stack", "hypothesis")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((place for place, marker in enumerate(_FIRST) if item.get_closest_marker(marker)), len(_FIRST))

    items.sort(key=rank)


def reconfigure() -> None:
    """As a new container: settings, records and clients pick the current environment up again."""
    from chalicelib import wiring

    wiring.new_container()


@pytest.fixture
def aws_resources() -> Iterator[None]:
    """A fresh in-process AWS (DynamoDB, SQS, S3) holding every arkflow table, queue and bucket."""
    import boto3

    from devstack.bootstrap import create_all

    with mock_aws():
        reconfigure()
        fresh_state("resources", lambda: create_all(boto3, os.environ["ARKFLOW_PREFIX"]))
        yield
    reconfigure()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """`python -m devstack` on free ports with a unique prefix, once per test process.

    Yields `api_url`, `ws_url`, `web_url`, `sim_url` (admin root) / `ark_base_url`, `moto_url`, `admin` and
    `demo` credentials, and `output()` (what the stack printed). Stopped with SIGTERM at the end.
    """
    with launch_local_stack(tmp_path_factory.mktemp("local-stack") / "stack.log") as stack:
        yield stack


@pytest.fixture
def seeded(aws_resources: None) -> None:
    from chalicelib import catalog
    from devstack.demo import create_demo_data

    # The default models call their table model's id at the deployment's provider (from `ARK_BASE_URL`).
    fresh_state("seeded", lambda: create_demo_data(admin=ADMIN, accounts=[(*DEMO, "user"), (*OTHER, "user")],
                                                   default_models=True), depends_on=[catalog.provider()])


@pytest.fixture
def api(seeded: None) -> Iterator[Api]:
    from app import app

    with Client(app) as client:
        yield Api(client)
