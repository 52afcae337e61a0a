"""What an input image really is (format and pixel size, read from its header) and whether Ark accepts it.

The checks are shared by request validation (inline data URIs) and by whoever inspects uploaded objects, so a
reference image or a video frame is judged the same way however it arrived.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import filetype
import imagesize

from chalicelib.ark.limits import (
    IMAGE_INPUT_FORMATS,
    IMAGE_INPUT_MAX_BYTES,
    IMAGE_INPUT_MAX_PIXELS,
    IMAGE_INPUT_MIN_SIDE_EXCLUSIVE,
    IMAGE_MAX_ASPECT,
    IMAGE_MIN_ASPECT,
    VIDEO_INPUT_FORMATS,
    VIDEO_INPUT_MAX_ASPECT_EXCLUSIVE,
    VIDEO_INPUT_MAX_BYTES,
    VIDEO_INPUT_MAX_SIDE_EXCLUSIVE,
    VIDEO_INPUT_MIN_ASPECT_EXCLUSIVE,
    VIDEO_INPUT_MIN_SIDE_EXCLUSIVE,
)

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class ImageInfo:
    format: str  # the MIME subtype sniffed from the bytes: "jpeg", "png", "webp", ...
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"


def inspect_image(data: bytes) -> ImageInfo | None:
    """Format and size of an image from its magic bytes and header; None when it is not a readable image."""
    kind = filetype.image_match(data)
    if kind is None:
        return None
    # imagesize treats `bytes` as a file path: hand it a stream.
    width, height = imagesize.get(io.BytesIO(data))
    if width <= 0 or height <= 0:
        return None
    return ImageInfo(kind.mime.removeprefix("image/"), width, height)


def reference_image_problem(info: ImageInfo, size_bytes: int) -> str | None:
    """Why Seedream 4.5 would refuse this reference image (docs/ark.md, "Input images"), or None."""
    if info.format not in IMAGE_INPUT_FORMATS:
        return f"format {info.format} is not one of {', '.join(IMAGE_INPUT_FORMATS)}"
    if size_bytes > IMAGE_INPUT_MAX_BYTES:
        return f"image is larger than {IMAGE_INPUT_MAX_BYTES // MEGABYTE} MB"
    if min(info.width, info.height) <= IMAGE_INPUT_MIN_SIDE_EXCLUSIVE:
        return f"each side must be more than {IMAGE_INPUT_MIN_SIDE_EXCLUSIVE} px"
    if info.width * info.height > IMAGE_INPUT_MAX_PIXELS:
        return f"image has more than {IMAGE_INPUT_MAX_PIXELS} pixels"
    # Input images share the aspect range of output sizes.
    if not IMAGE_MIN_ASPECT <= info.width / info.height <= IMAGE_MAX_ASPECT:
        return "aspect ratio width/height must be within [1/16, 16]"
    return None


def frame_image_problem(info: ImageInfo, size_bytes: int) -> str | None:
    """Why Seedance 1.0 pro would refuse this first/last frame (docs/ark.md, "Input images"), or None."""
    if info.format not in VIDEO_INPUT_FORMATS:
        return f"format {info.format} is not one of {', '.join(VIDEO_INPUT_FORMATS)}"
    if size_bytes >= VIDEO_INPUT_MAX_BYTES:
        return f"image must be smaller than {VIDEO_INPUT_MAX_BYTES // MEGABYTE} MB"
    low, high = VIDEO_INPUT_MIN_SIDE_EXCLUSIVE, VIDEO_INPUT_MAX_SIDE_EXCLUSIVE
    if not (low < info.width < high and low < info.height < high):
        return f"each side must be strictly between {low} and {high} px"
    low_aspect, high_aspect = VIDEO_INPUT_MIN_ASPECT_EXCLUSIVE, VIDEO_INPUT_MAX_ASPECT_EXCLUSIVE
    if not low_aspect < info.width / info.height < high_aspect:
        return f"aspect ratio width/height must be strictly between {low_aspect} and {high_aspect}"
    return None
