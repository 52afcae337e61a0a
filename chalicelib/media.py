"""Images and results arkflow keeps in S3, and the short-lived URLs that hand them out."""

from __future__ import annotations

import base64
import re
from typing import Any

import filetype

S3_SCHEME = "s3://"
INLINE_PREFIX = "data:"
PRESIGNED_URL_TTL_S = 3600
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tiff", "gif": "gif"}
# The one type each stored object is handed out as, by its key's extension (keys are arkflow's own); anything else
# goes out as a download of bytes. A browser never renders what arkflow stores as markup or script.
SERVED_TYPES = {**{extension: f"image/{subtype}" for subtype, extension in EXTENSIONS.items()}, "mp4": "video/mp4"}
UNKNOWN_TYPE = "application/octet-stream"
# What a task's results may be, told from their bytes: what Ark produces (Seedream JPEG, Seedance MP4 with a PNG last
# frame), with PNG and WebP images allowed for models that answer with them.
RESULT_TYPES = {"image": ("image/jpeg", "image/png", "image/webp"), "video": ("video/mp4",)}


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


def urls_for_ark(s3: Any, refs: list[str] | None) -> list[str]:
    """A task's input images as Ark is sent them: stored ones presigned, inline data and public URLs as they are."""
    return [presign_get(s3, ref) if is_s3_ref(ref) else ref for ref in refs or []]


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
