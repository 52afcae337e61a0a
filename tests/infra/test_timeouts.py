"""Every Ark call ends before the Lambda making it is killed, so its outcome is always recorded.

A Lambda killed mid-call leaves a task `running` until its lease or deadline runs out; the httpx timeouts (and
the poller's time budget) must keep every call inside the function's timeout, whatever Ark does.
The queue-side checks (DLQ on every lane, visibility >= 6 x timeout, maxReceiveCount >= 5, batch item
failures) are in tests/infra/test_package.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from chalicelib import wiring
from chalicelib.resources import lane_named
from infra.stages import STAGES, Stage

pytestmark = pytest.mark.abuse


def longest_request_s(timeout: httpx.Timeout) -> float:
    """One request at its slowest: waiting for a pooled connection, connecting, sending, waiting for the answer."""
    return sum(phase or 0.0 for phase in (timeout.pool, timeout.connect, timeout.write, timeout.read))


@pytest.fixture
def deployed_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The clients each function builds from its settings, as on AWS (a key is set)."""
    monkeypatch.setenv("ARK_API_KEY", "sk-timeouts-test")
    wiring.new_container()
    yield
    monkeypatch.delenv("ARK_API_KEY")
    wiring.new_container()


@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_every_ark_call_ends_before_its_lambda_times_out(deployed_clients: None, stage: Stage) -> None:
    """Safeguard: httpx timeouts (all phases together) below each function's Lambda timeout."""
    from app import POLL_BUDGET_S

    # The clients' configured timeouts are private; reading them is the point of this test.
    services = wiring.current()
    image_lane, video_lane = services.lane_worker("image"), services.lane_worker("video")
    api_video_client = services.video_status.client
    assert longest_request_s(image_lane.images.client._timeout) < lane_named("image").lambda_timeout_s
    assert longest_request_s(video_lane.videos.submitter.client._timeout) < lane_named("video").lambda_timeout_s
    # Cancel and Ark's callback each make one Ark call from the API function.
    assert longest_request_s(api_video_client._timeout) < stage.api_timeout_s
    # The poller starts no read after its budget; the last one started must still end in time.
    assert POLL_BUDGET_S + longest_request_s(api_video_client._timeout) < stage.default_timeout_s
