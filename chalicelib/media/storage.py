"""Images and results arkflow keeps in S3, and the short-lived URLs that hand them out.

How long each URL really lives on AWS is in `docs/storage.md`: a presigned URL dies with the credentials that
signed it, and a Lambda's role credentials are temporary.
"""

from __future__ import annotations

import base64
import logging
import math
import re
from functools import lru_cache
from typing import Any

import boto3
import filetype

from chalicelib import aws, secret_store
from chalicelib.ark.capabilities import EXPIRES_AFTER
from chalicelib.settings import Settings

S3_SCHEME = "s3://"
INLINE_PREFIX = "data:"
log = logging.getLogger(__name__)

PRESIGNED_URL_TTL_S = 3600
# Inputs sent to Ark inline, in all (base64 included): well within Ark's request body limit (64 MB for a video) and
# what a 512 MB lane function holds at once (the bytes, their base64 and the JSON body).
ARK_INLINE_BYTES = 32 * 1024 * 1024
# An input Ark may fetch later: valid past the longest `execution_expires_after` Ark takes, counted from the create.
ARK_INPUT_URL_TTL_S = EXPIRES_AFTER.maximum + 3600
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tiff", "gif": "gif"}
# The one type each stored object is handed out as, by its key's extension (keys are arkflow's own); anything else
# goes out as a download of bytes. A browser never renders what arkflow stores as markup or script.
SERVED_TYPES = {**{extension: f"image/{subtype}" for subtype, extension in EXTENSIONS.items()}, "mp4": "video/mp4",
                "mov": "video/quicktime"}
UNKNOWN_TYPE = "application/octet-stream"
# What a task's results may be, told from their bytes: what Ark produces (Seedream JPEG, Seedance MP4 with a PNG last
# frame), with PNG and WebP images and MOV videos allowed for models that answer with them.
RESULT_TYPES = {"image": ("image/jpeg", "image/png", "image/webp"), "video": ("video/mp4", "video/quicktime")}


def s3_ref(bucket: str, key: str) -> str:
    return f"{S3_SCHEME}{bucket}/{key}"


def split_s3_ref(ref: str) -> tuple[str, str]:
    bucket, _, key = ref[len(S3_SCHEME):].partition("/")
    return bucket, key


def is_s3_ref(ref: str) -> bool:
    return ref.startswith(S3_SCHEME)


def task_prefix(task_id: str) -> str:
    """Every object arkflow stores for a task lives under this prefix (inputs and results)."""
    return f"tasks/{task_id}/"


def input_key(task_id: str, index: int, content_type: str) -> str:
    extension = EXTENSIONS.get(content_type.removeprefix("image/"), "bin")
    return f"{task_prefix(task_id)}inputs/{index}.{extension}"


def store_bytes(s3: Any, bucket: str, key: str, data: bytes, content_type: str) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    return s3_ref(bucket, key)


def data_uri(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def sniff(head: bytes) -> str | None:
    """The media type of a file from its first bytes (its signature), whatever a server said it was."""
    kind = filetype.guess(head)
    return kind.mime if kind is not None else None


def extension_of(content_type: str) -> str:
    return next((extension for extension, served in SERVED_TYPES.items() if served == content_type), "bin")


def download_name(key: str) -> str:
    """`tasks/<id>/results/image-0.jpg` → `arkflow-<id>-image-0.jpg`: what a saved file is called."""
    parts = [part for part in key.split("/")[1:] if part != "results"] if key.startswith("tasks/") else [key]
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(["arkflow", *parts]))


def presign_get(s3: Any, ref: str, ttl_s: int = PRESIGNED_URL_TTL_S) -> str:
    """A GET URL whose answer S3 types by the key (`SERVED_TYPES`) and marks as an attachment, whatever the
    object's stored metadata says: opened in a tab, a stored file is saved, never run on the bucket's origin."""
    bucket, key = split_s3_ref(ref)
    served = SERVED_TYPES.get(key.rpartition(".")[2].lower(), UNKNOWN_TYPE)
    params = {"Bucket": bucket, "Key": key, "ResponseContentType": served,
              "ResponseContentDisposition": f'attachment; filename="{download_name(key)}"'}
    return s3.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_s)


def urls_for_ark(s3: Any, refs: list[str] | None, settings: Settings) -> list[str]:
    """A task's input images as Ark is sent them: stored ones inline (`data:` URIs) while their encoded size fits
    ARK_INLINE_BYTES, the rest presigned to outlive any task at Ark (ARK_INPUT_URL_TTL_S) by the signer that can
    (`ark_input_signer`); public URLs and inline data as they came.

    Ark may fetch a video's inputs until its `execution_expires_after`, long after the create: inline, nothing can
    expire.
    """
    urls: list[str] = []
    inline_left = ARK_INLINE_BYTES
    for ref in refs or []:
        if not is_s3_ref(ref):
            urls.append(ref)
            continue
        bucket, key = split_s3_ref(ref)
        content_type = SERVED_TYPES.get(key.rpartition(".")[2].lower(), UNKNOWN_TYPE)
        encoded_bytes = len(f"data:{content_type};base64,") + 4 * math.ceil(
            s3.head_object(Bucket=bucket, Key=key)["ContentLength"] / 3)
        if encoded_bytes <= inline_left:
            urls.append(data_uri(content_type, s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
            inline_left -= encoded_bytes
        else:
            urls.append(presign_get(ark_input_signer(s3, settings), ref, ARK_INPUT_URL_TTL_S))
    return urls


def ark_input_signer(s3: Any, settings: Settings) -> Any:
    """The S3 client whose presigned URLs live as long as they say: one signing with the long-term key of the IAM
    user held by the secret ARK_INPUTS_SIGNING_SECRET names (`{"access_key_id", "secret_access_key"}`), read
    through the container's secret store (a rotated key arrives within `secret_store.SECRET_TTL_S`). Without it,
    `s3` (the Lambda's role): its URLs end with the role's temporary credentials, possibly before Ark fetches them."""
    if not settings.ark_inputs_signing_secret:
        log.warning("no ARK_INPUTS_SIGNING_SECRET: an input too large to send inline is presigned with the "
                    "function's temporary credentials and may expire before Ark fetches it")
        return s3
    key = secret_store.store(settings.ark_inputs_signing_secret)
    return _long_term_signer(key.get("access_key_id"), key.get("secret_access_key"), settings.region)


@lru_cache(maxsize=2)
def _long_term_signer(access_key_id: str, secret_access_key: str, region: str) -> Any:
    """One client per key (the one in use and the one it replaces), signing as every S3 URL of the app is
    signed (`aws.s3_config`: SigV4 on the bucket's regional host)."""
    session = boto3.session.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                    region_name=region)
    return session.client("s3", config=aws.s3_config())


def display_url(s3: Any, ref: str) -> str:
    """What the API shows for a stored reference: a presigned URL for S3, a placeholder for inline data."""
    if is_s3_ref(ref):
        return presign_get(s3, ref)
    if ref.startswith(INLINE_PREFIX):
        # Never echo base64 bodies back: they are large and may be private.
        return ref.split(",", 1)[0] + ",<omitted>"
    return ref


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    deleted = 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
            deleted += len(objects)
    return deleted
