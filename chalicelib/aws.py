"""boto3 clients, made once per Lambda container and reused across invocations."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.settings import get_settings

_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})


def s3_config() -> Config:
    """How S3 URLs are made: what the app presigns (result links, Ark's inputs, browser upload forms) must be
    accepted by a bucket created today.

    SigV4 always: botocore would otherwise presign with SigV2 in us-east-1, eu-west-1 and ap-southeast-1, which
    newer buckets refuse. The regional virtual host (`<bucket>.s3.<region>.amazonaws.com`) always: the global host
    answers a new bucket outside us-east-1 with a 307 redirect, which a browser's cross-origin upload POST does not
    follow. An endpoint override (the local stack's moto) is addressed by path: its host has no bucket subdomains.
    """
    overridden = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    return _CONFIG.merge(
        Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if overridden else "virtual", "us_east_1_regional_endpoint": "regional"},
        )
    )


@cache
def client(service: str) -> Any:
    config = s3_config() if service == "s3" else _CONFIG
    return boto3.session.Session().client(service, region_name=get_settings().region, config=config)


def s3() -> Any:
    return client("s3")


def sqs() -> Any:
    return client("sqs")


def reset() -> None:
    """Forget cached clients (tests and the local stack change endpoints between runs)."""
    client.cache_clear()
