"""The quota day follows QUOTA_TIMEZONE, not UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.errors import TooManyRequests
from chalicelib.settings import Settings
from chalicelib.store.quota import quota_day
from chalicelib.wiring import Wiring
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import DEMO, principal_of


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("utc_time", "timezone", "day"),
    [
        ("2026-03-01T15:59:59", "Asia/Shanghai", "2026-03-01"),
        ("2026-03-01T16:00:00", "Asia/Shanghai", "2026-03-02"),  # midnight in Shanghai is 16:00 UTC
        ("2026-03-01T16:00:00", "UTC", "2026-03-01"),
    ],
)
def test_quota_day_boundaries(utc_time: str, timezone: str, day: str) -> None:
    assert quota_day(epoch(utc_time), timezone) == day


def test_a_new_quota_day_starts_at_midnight_in_the_quota_timezone(api: Api) -> None:
    import boto3

    api.request("PUT", "/api/admin/models/seedream-4.5", {"daily_quota": 1}, as_user=("admin", "admin-pass"))
    clock = FrozenClock(epoch("2026-03-01T15:59:00"))
    service = Wiring(Settings(), clock=clock, s3=boto3.client("s3"), sqs=boto3.client("sqs")).intake
    demo = principal_of(DEMO)
    body = {"type": "image", "model_id": "seedream-4.5", "prompt": "p"}

    assert service.create(demo, body).status_code == 201
    with pytest.raises(TooManyRequests) as refused:
        service.create(demo, body)
    assert refused.value.code == "quota_exceeded" and refused.value.details["quota"] == ["model"]
    clock.advance(60)  # 16:00 UTC: midnight in Asia/Shanghai
    assert service.create(demo, body).status_code == 201
