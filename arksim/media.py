"""Result files the simulator serves: JPEG/PNG images, MP4 videos (with an audio track when asked) and PNG last
frames, of the promised dimensions and drawn from the request, so results can be told apart at a glance.

A picture is a gradient whose colours come from the prompt, captioned with the prompt, the model, the size and
the image's place in its group; a video pans that gradient under a moving disc with the same caption. Only the
description is stored; the bytes are rendered on first download and cached, so a 15-image 4K group costs nothing
until someone fetches it.
"""

from __future__ import annotations

import array
import hashlib
import io
import itertools
import math
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import av
from PIL import Image, ImageDraw, ImageFont

from chalicelib.ark.capabilities import VIDEO_FPS

MediaKind = Literal["jpeg", "png", "mp4", "mov"]
CONTENT_TYPES: dict[MediaKind, str] = {"jpeg": "image/jpeg", "png": "image/png", "mp4": "video/mp4",
                                       "mov": "video/quicktime"}
AUDIO_SAMPLE_RATE = 24_000  # Seedance's generated audio is mono
CAPTION_MAX_CHARS = 160


@dataclass(frozen=True)
class Look:
    """What a result shows: the request it answers, and its place among the results of that request."""

    prompt: str = ""
    model: str = ""
    index: int = 0  # 0-based place in an image group
    count: int = 1  # images in the group
    audio: bool = False  # videos: an audio track beside the picture
    note: str = ""  # shown after the size, e.g. "draft"

    def caption(self, width: int, height: int) -> list[str]:
        prompt = " ".join(self.prompt.split()) or "(no prompt)"
        if len(prompt) > CAPTION_MAX_CHARS:
            prompt = prompt[:CAPTION_MAX_CHARS - 1] + "…"
        place = f" · image {self.index + 1} of {self.count}" if self.count > 1 else ""
        extras = "".join(f" · {extra}" for extra in (self.note, "with audio" if self.audio else "") if extra)
        return [*textwrap.wrap(prompt, 48)[:3], f"{self.model} · {width}x{height}{place}{extras}"]

    def colours(self) -> tuple[tuple[int, int, int], ...]:
        """Four corner colours, the same for the same prompt; a group's images shift hue by their index."""
        digest = hashlib.sha256(f"{self.prompt}\0{self.model}".encode()).digest()
        shift = self.index * 47
        return tuple(_colour((digest[corner * 3] + shift) % 256, digest[corner * 3 + 1], digest[corner * 3 + 2])
                     for corner in range(4))


def _colour(hue: int, saturation: int, value: int) -> tuple[int, int, int]:
    """A saturated, mid-bright colour from three bytes (HSV with clamped saturation and value)."""
    image = Image.new("HSV", (1, 1), (hue, 120 + saturation // 2, 130 + value // 3)).convert("RGB")
    pixel = image.getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return pixel[0], pixel[1], pixel[2]


@dataclass(frozen=True)
class Media:
    id: str
    kind: MediaKind
    width: int
    height: int
    created_at: float
    frames: int = 0
    look: Look = Look()
    still_of_frame: int | None = None  # a PNG last frame: which frame of the video it shows

    @property
    def filename(self) -> str:
        return f"{self.id}.{self.kind}"

    def render(self) -> bytes:
        if self.kind in ("mp4", "mov"):
            return render_video(self.width, self.height, self.frames, self.look, self.kind)
        if self.still_of_frame is not None:
            return render_still(self.width, self.height, self.frames, self.still_of_frame, self.look)
        return render_picture(self.kind, self.width, self.height, self.look)


def _gradient(width: int, height: int, look: Look) -> Image.Image:
    # A 2×2 image scaled up bilinearly: a smooth four-corner gradient at any size, in one C call.
    corners = Image.new("RGB", (2, 2))
    corners.putdata(list(look.colours()))
    return corners.resize((width, height), Image.Resampling.BILINEAR)


def _caption_band(width: int, height: int, look: Look) -> Image.Image:
    """The caption as a translucent band (RGBA) for the bottom of a picture or of every frame."""
    lines = look.caption(width, height)
    size = max(10, min(width // 30, height // 14))
    font = ImageFont.load_default(size=size)
    pad = size // 2
    band = Image.new("RGBA", (width, min(len(lines) * (size + pad // 2) + pad * 2, height)), (0, 0, 0, 130))
    draw = ImageDraw.Draw(band)
    for row, line in enumerate(lines):
        draw.text((pad, pad + row * (size + pad // 2)), line, fill=(255, 255, 255, 255), font=font)
    return band


def _with_caption(image: Image.Image, band: Image.Image) -> Image.Image:
    image.paste(band, (0, image.height - band.height), band)
    return image


@lru_cache(maxsize=32)
def render_picture(kind: Literal["jpeg", "png"], width: int, height: int, look: Look) -> bytes:
    buffer = io.BytesIO()
    picture = _with_caption(_gradient(width, height, look), _caption_band(width, height, look))
    picture.save(buffer, format=kind.upper())
    return buffer.getvalue()


class _Frames:
    """The frames of a video: a gradient twice as wide as the picture, panned across, with the caption fixed at
    the bottom and a disc that sweeps from left to right once over the clip."""

    def __init__(self, width: int, height: int, frames: int, look: Look) -> None:
        self.width, self.height, self.frames = width, height, frames
        half = _gradient(width, height, look)
        self.strip = Image.new("RGB", (width * 2, height))
        self.strip.paste(half, (0, 0))
        self.strip.paste(half.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (width, 0))  # seamless at the fold
        self.band = _caption_band(width, height, look)

    def frame(self, index: int) -> Image.Image:
        progress = index / max(1, self.frames - 1)
        offset = int(progress * self.width)
        image = self.strip.crop((offset, 0, offset + self.width, self.height))
        radius = max(4, min(self.width, self.height) // 10)
        x = radius + int(progress * (self.width - 2 * radius))
        y = self.height // 3 + int(math.sin(progress * 2 * math.pi) * self.height / 8)
        ImageDraw.Draw(image).ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 255, 255))
        return _with_caption(image, self.band)


@lru_cache(maxsize=16)
def render_still(width: int, height: int, frames: int, index: int, look: Look) -> bytes:
    """One frame of a video as a PNG (the last frame Seedance returns on request)."""
    buffer = io.BytesIO()
    _Frames(width, height, frames, look).frame(index).save(buffer, format="PNG")
    return buffer.getvalue()


@lru_cache(maxsize=16)
def render_video(width: int, height: int, frames: int, look: Look, container_format: str = "mp4") -> bytes:
    """An H.264 MP4 (or MOV) at Seedance's 24 fps with `frames` moving frames, and a mono AAC tone when
    `look.audio`."""
    buffer = io.BytesIO()
    drawn = _Frames(width, height, frames, look)
    with av.open(buffer, mode="w", format=container_format) as container:
        video = container.add_stream("libx264", rate=VIDEO_FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "40"}
        audio = container.add_stream("aac", rate=AUDIO_SAMPLE_RATE, layout="mono") if look.audio else None
        for index in range(frames):
            frame = av.VideoFrame.from_image(drawn.frame(index))
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is not None:
            container.mux(audio.encode(_tone(frames / VIDEO_FPS, look)))
            container.mux(audio.encode())
    return buffer.getvalue()


def _tone(seconds: float, look: Look) -> av.AudioFrame:
    """A soft tone whose pitch comes from the prompt (so two clips do not sound alike either)."""
    pitch = 220 + hashlib.sha256(look.prompt.encode()).digest()[0] * 2
    count = int(seconds * AUDIO_SAMPLE_RATE)
    step = 2 * math.pi * pitch / AUDIO_SAMPLE_RATE
    samples = array.array("h", (int(6000 * math.sin(step * index)) for index in range(count)))
    frame = av.AudioFrame(format="s16", layout="mono", samples=count)
    frame.sample_rate = AUDIO_SAMPLE_RATE
    frame.planes[0].update(samples.tobytes().ljust(frame.planes[0].buffer_size, b"\0"))
    frame.pts = 0
    return frame


class MediaStore:
    def __init__(self) -> None:
        self._items: dict[str, Media] = {}
        self._ids = itertools.count(1)

    def add(self, kind: MediaKind, width: int, height: int, created_at: float, frames: int = 0,
            look: Look = Look(), still_of_frame: int | None = None) -> Media:
        media = Media(f"m{next(self._ids):06d}", kind, width, height, created_at, frames, look, still_of_frame)
        self._items[media.id] = media
        return media

    def get(self, media_id: str) -> Media | None:
        return self._items.get(media_id)

    def clear(self) -> None:
        self._items.clear()

