"""What an input image really is (format and pixel size, read from its header) and whether Ark accepts it.

The checks are shared by request validation (inline data URIs) and by whoever inspects uploaded objects, so a
reference image or a video frame is judged the same way however it arrived.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import filetype
import imagesize

from chalicelib.ark.capabilities import SEEDANCE_INPUT_IMAGES, SEEDREAM_INPUT_IMAGES, InputImageRules

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


def input_image_problem(rules: InputImageRules, info: ImageInfo, size_bytes: int) -> str | None:
    """Why a model with these input rules would refuse the image (docs/ark.md, "Input images"), or None."""
    if info.format not in rules.formats:
        return f"format {info.format} is not one of {', '.join(rules.formats)}"
    megabytes = rules.max_bytes // MEGABYTE
    if rules.max_bytes_inclusive and size_bytes > rules.max_bytes:
        return f"image is larger than {megabytes} MB"
    if not rules.max_bytes_inclusive and size_bytes >= rules.max_bytes:
        return f"image must be smaller than {megabytes} MB"
    if rules.max_side is None:
        if min(info.width, info.height) <= rules.min_side:
            return f"each side must be more than {rules.min_side} px"
    elif not (rules.min_side < info.width < rules.max_side and rules.min_side < info.height < rules.max_side):
        return f"each side must be strictly between {rules.min_side} and {rules.max_side} px"
    if rules.max_pixels is not None and info.width * info.height > rules.max_pixels:
        return f"image has more than {rules.max_pixels} pixels"
    low, high = rules.aspect
    aspect = info.width / info.height
    if rules.aspect_inclusive and not low <= aspect <= high:
        return "aspect ratio width/height must be within [1/16, 16]"
    if not rules.aspect_inclusive and not low < aspect < high:
        return f"aspect ratio width/height must be strictly between {low} and {high}"
    return None


def reference_image_problem(info: ImageInfo, size_bytes: int) -> str | None:
    """Why Seedream would refuse this reference image, or None."""
    return input_image_problem(SEEDREAM_INPUT_IMAGES, info, size_bytes)


def frame_image_problem(info: ImageInfo, size_bytes: int) -> str | None:
    """Why Seedance would refuse this first/last frame or reference image, or None."""
    return input_image_problem(SEEDANCE_INPUT_IMAGES, info, size_bytes)
