"""Reading the reference images a request names: data URIs are decoded, the simulator's own result URLs are
looked up, other URLs are accepted unread (the simulator never reaches outside the machine)."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from PIL import Image, UnidentifiedImageError

from arksim.errors import SimError
from arksim.media import MediaStore

DATA_URI = re.compile(r"data:image/([^;]+);base64,(.*)", re.DOTALL)
MEDIA_PATH = re.compile(r"/_sim/media/(m\d+)\.\w+")
FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}


@dataclass(frozen=True)
class InputImage:
    """What is known about one reference image; dimensions are None for URLs the simulator cannot read."""

    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None


def inspect_image(value: Any, param: str, formats: tuple[str, ...], media: MediaStore) -> InputImage:
    if not isinstance(value, str) or not value.strip():
        raise SimError(400, "InvalidImageURL.EmptyURL", param=param)
    match = DATA_URI.fullmatch(value)
    if match:
        return _decode_data_uri(match[1], match[2], param, formats)
    url = urlparse(value)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise SimError(400, "InvalidImageURL.InvalidFormat", param=param)
    own = MEDIA_PATH.fullmatch(url.path)
    known = media.get(own[1]) if own else None
    if known is not None:
        return InputImage(known.width, known.height)
    return InputImage()


def _decode_data_uri(declared: str, payload: str, param: str, formats: tuple[str, ...]) -> InputImage:
    fmt = FORMAT_ALIASES.get(declared, declared)
    if fmt not in formats:
        raise SimError(400, "InvalidImageURL.InvalidFormat", param=param)
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise SimError(400, "InvalidImageURL.InvalidFormat", param=param) from None
    return InputImage(width, height, len(raw))
