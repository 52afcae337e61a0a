"""boto3 clients, made once per Lambda container and reused across invocations."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.settings import get_settings

_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})


@cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, region_name=get_settings().region, config=_CONFIG)


def s3() -> Any:
    return client("s3")


def sqs() -> Any:
    return client("sqs")


def reset() -> None:
    """Forget cached clients (tests and the local stack change endpoints between runs)."""
    client.cache_clear()
