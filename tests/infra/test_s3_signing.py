"""What the app presigns is what a bucket created today accepts: SigV4 on the bucket's regional virtual host.

moto accepts any signature on any host, so these tests read the URLs and forms the code hands out instead.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

from chalicelib import aws
from chalicelib.media import storage
from chalicelib.media.uploads import UPLOAD_FORM_TTL_S, UploadService
from chalicelib.settings import get_settings
from tests.conftest import reconfigure

SIGV4 = "AWS4-HMAC-SHA256"
# The three regions where botocore's default presigns with SigV2, and one where it signs SigV4 on the global host.
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1", "eu-central-1"]


@pytest.fixture(params=REGIONS)
def region(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from devstack.bootstrap import create_tables

    monkeypatch.setenv("AWS_DEFAULT_REGION", request.param)
    with mock_aws():
        reconfigure()
        create_tables(boto3.client("dynamodb"), os.environ["ARKFLOW_PREFIX"])  # presigning itself needs no bucket
        yield request.param
    monkeypatch.undo()
    reconfigure()


def _regional_host(region: str) -> str:
    return f"{os.environ['RESULTS_BUCKET']}.s3.{region}.amazonaws.com"


def test_result_and_input_links_are_sigv4_on_the_regional_virtual_host(region: str) -> None:
    key = "tasks/t1/results/0.png"
    url = storage.presign_get(aws.s3(), storage.s3_ref(os.environ["RESULTS_BUCKET"], key))
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.netloc, parts.path) == ("https", _regional_host(region), f"/{key}")
    assert query["X-Amz-Algorithm"] == SIGV4
    assert query["X-Amz-Credential"].endswith(f"/{region}/s3/aws4_request")
    assert int(query["X-Amz-Expires"]) == storage.PRESIGNED_URL_TTL_S
    assert "X-Amz-Security-Token" in query  # Lambda's role credentials are temporary: the token must travel along
    assert not {"AWSAccessKeyId", "Signature", "Expires"} & set(query)


INPUTS_SIGNER_KEY_ID = "AKIAARKINPUTSSIGNER1"


def test_inputs_signed_for_ark_by_the_long_term_key_are_sigv4_on_the_regional_virtual_host(
    region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Ark fetches later (inputs too large to send inline) is signed like every other link."""
    bucket, key = os.environ["RESULTS_BUCKET"], "tasks/t1/inputs/0.png"
    s3 = boto3.client("s3")
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **location)
    s3.put_object(Bucket=bucket, Key=key, Body=b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    secret = boto3.client("secretsmanager").create_secret(Name="ark-inputs-signer", SecretString=json.dumps(
        {"access_key_id": INPUTS_SIGNER_KEY_ID, "secret_access_key": "long-term-secret-key-of-the-inputs-user"}))
    monkeypatch.setenv("ARK_INPUTS_SIGNING_SECRET", secret["Name"])
    monkeypatch.setattr(storage, "ARK_INLINE_BYTES", 0)
    reconfigure()

    [url] = storage.urls_for_ark(aws.s3(), [storage.s3_ref(bucket, key)], get_settings())

    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.netloc, parts.path) == ("https", _regional_host(region), f"/{key}")
    assert query["X-Amz-Algorithm"] == SIGV4
    assert query["X-Amz-Credential"].startswith(f"{INPUTS_SIGNER_KEY_ID}/")
    assert query["X-Amz-Credential"].endswith(f"/{region}/s3/aws4_request")
    assert int(query["X-Amz-Expires"]) == storage.ARK_INPUT_URL_TTL_S
    assert not {"X-Amz-Security-Token", "AWSAccessKeyId", "Signature", "Expires"} & set(query)


def test_browser_upload_form_is_sigv4_on_the_regional_virtual_host(region: str) -> None:
    before = time.time()
    form = UploadService(s3=aws.s3(), settings=get_settings()).create("demo-id", "image/png", 1000).body()
    after = time.time()
    assert form["url"] == f"https://{_regional_host(region)}/"
    fields = form["fields"]
    assert fields["x-amz-algorithm"] == SIGV4
    assert fields["x-amz-credential"].endswith(f"/{region}/s3/aws4_request")
    assert "x-amz-signature" in fields and "x-amz-security-token" in fields
    assert not {"AWSAccessKeyId", "signature"} & set(fields)
    policy = json.loads(base64.b64decode(fields["policy"]))
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert int(before) + UPLOAD_FORM_TTL_S <= expires <= after + UPLOAD_FORM_TTL_S
    assert {"x-amz-algorithm": SIGV4} in policy["conditions"]
    assert {"bucket": os.environ["RESULTS_BUCKET"]} in policy["conditions"]


def test_an_endpoint_override_is_addressed_by_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local stack's moto has no bucket subdomains: its links keep the bucket in the path, still SigV4."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:5999")
    aws.reset()
    try:
        url = storage.presign_get(aws.s3(), "s3://arkflow-dev-media/tasks/t1/results/0.png")
    finally:
        monkeypatch.undo()
        aws.reset()
    assert url.startswith("http://localhost:5999/arkflow-dev-media/tasks/t1/results/0.png?")
    assert parse_qs(urlsplit(url).query)["X-Amz-Algorithm"] == [SIGV4]
