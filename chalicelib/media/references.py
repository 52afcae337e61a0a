"""A task's input images as a request names them: an https URL Ark fetches, inline `data:` bytes decoded and checked
for what they really are, or an upload of the requester's (`upload:<id>`).

Inline images: `data:image/<format>;base64,<data>` with a lower-case format from Ark's list; `jpg` is accepted as
an alias of `jpeg`. Every inline image is decoded once and checked for what it really is, so
`ImageRef.content_type` is always the sniffed canonical type (`image/jpeg`, never `image/jpg`). A reference that is
none of these raises `BadReference`, which the request schemas (`chalicelib.schemas`) report at its field.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AnyUrl, TypeAdapter, UrlConstraints, ValidationError

from chalicelib.ark.capabilities import SEEDREAM_INPUT_IMAGES
from chalicelib.media.inspection import ImageInfo, inspect_image

MAX_URL_CHARS = 4096
UPLOAD_PREFIX = "upload:"
# Ark's own media library: reference media may name an asset of the account instead of a URL.
ASSET_URL = re.compile(r"asset://[A-Za-z0-9_-]{1,128}")
FORMAT_ALIASES = {"jpg": "jpeg"}
IMAGE_REF_FORMS = "an https URL, a data:image/<format>;base64,<data> URI or upload:<id>"

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_DATA_URI_HEADER = re.compile(r"data:image/([a-z]+);base64")
_HTTPS_URL = TypeAdapter(
    Annotated[AnyUrl, UrlConstraints(max_length=MAX_URL_CHARS, allowed_schemes=["https"], host_required=True)]
)


class BadReference(ValueError):
    """What is wrong with a reference (`kind`, a problem type) in words that never echo the value."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class ImageRef:
    """One input image as the request gave it: a URL Ark fetches, decoded inline bytes, or an S3 upload id."""

    kind: Literal["url", "inline", "upload"]
    url: str | None = None
    upload_id: str | None = None
    content_type: str | None = None
    data: bytes | None = field(default=None, repr=False)
    width: int | None = None
    height: int | None = None


ImageProblem = Callable[[ImageInfo, int], str | None]


def image_ref(value: Any, image_problem: ImageProblem) -> ImageRef:
    if not isinstance(value, str):
        raise BadReference("image_ref", f"must be a string: {IMAGE_REF_FORMS}")
    if value.startswith(UPLOAD_PREFIX):
        upload_id = value.removeprefix(UPLOAD_PREFIX)
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise BadReference("upload_id", "upload id must be 32 lower-case hex characters")
        return ImageRef("upload", upload_id=upload_id)
    if value.startswith("data:"):
        return _inline_image(value, image_problem)
    url = https_url(value, "image_url", f"must be {IMAGE_REF_FORMS}; URLs must be https with a host")
    return ImageRef("url", url=url)


def media_url(value: Any) -> str:
    """A reference video or audio clip: an https URL Ark fetches, or `asset://<id>` of the account's library."""
    if not isinstance(value, str):
        raise BadReference("media_url", "must be a string: an https URL or asset://<id>")
    if ASSET_URL.fullmatch(value):
        return value
    return https_url(value, "media_url", "must be an https URL with a host, or asset://<id>")


def https_url(value: str, kind: str, message: str) -> str:
    """`value` as an https URL with a host and no credentials; otherwise the problem `kind` with `message`."""
    try:
        url = _HTTPS_URL.validate_python(value)
    except ValidationError:
        raise BadReference(kind, message) from None
    if url.username or url.password:
        raise BadReference(kind, "URL must not contain credentials")
    return str(url)


def _inline_image(uri: str, image_problem: ImageProblem) -> ImageRef:
    header, _, payload = uri.partition(",")
    declared = _DATA_URI_HEADER.fullmatch(header)
    if declared is None:
        raise BadReference("data_uri", "must look like data:image/<format>;base64,<data> with a lower-case format")
    declared_format = FORMAT_ALIASES.get(declared[1], declared[1])
    if declared_format not in SEEDREAM_INPUT_IMAGES.formats:
        raise BadReference("image_format", f"format must be one of {', '.join(SEEDREAM_INPUT_IMAGES.formats)} (or jpg)")
    try:
        data = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadReference("base64", "data is not valid base64 (standard alphabet, padded, no whitespace)") from None
    info = inspect_image(data)
    if info is None:
        raise BadReference("image_format", "data is not a readable image")
    if info.format != declared_format:
        raise BadReference("image_format", f"data is a {info.format} image, not {declared_format}")
    if problem := image_problem(info, len(data)):
        raise BadReference("image_limits", problem)
    return ImageRef("inline", content_type=info.content_type, data=data, width=info.width, height=info.height)
