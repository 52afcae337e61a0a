"""boto3 clients, made once per Lambda container and reused across invocations, all from one session."""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any

import boto3
import botocore.session
from botocore.config import Config

from chalicelib.settings import get_settings

_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})

# A botocore session is not thread-safe while it makes a client (its components load lazily): one at a time.
making_clients = threading.RLock()


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
def _sessions() -> tuple[boto3.session.Session, botocore.session.Session]:
    """The container's one session, as boto3's and as the botocore session under it (pynamodb's connection makes
    its client from that: `chalicelib.store.writes`). Each new botocore session registers its few hundred event
    handlers and resolves the credentials again: a session per client cost every cold start tens of milliseconds
    per client, and the clients it makes are the same."""
    core = botocore.session.get_session()
    return boto3.session.Session(botocore_session=core), core


def botocore_session() -> botocore.session.Session:
    return _sessions()[1]


@cache
def client(service: str) -> Any:
    config = s3_config() if service == "s3" else _CONFIG
    with making_clients:
        return _sessions()[0].client(service, region_name=get_settings().region, config=config)


def s3() -> Any:
    return client("s3")


def sqs() -> Any:
    return client("sqs")


def reset() -> None:
    """Forget the session and cached clients (tests and the local stack change endpoints and credentials between
    runs)."""
    client.cache_clear()
    _sessions.cache_clear()
