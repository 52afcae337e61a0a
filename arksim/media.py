"""Result files the simulator serves: JPEG images, MP4 videos and PNG last frames of the promised dimensions.

Only metadata is stored; the bytes are rendered on first download (solid colours compress to a few KB) and
cached, so a 15-image 4K group costs nothing until someone fetches it.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import av
from PIL import Image

from chalicelib.ark.limits import VIDEO_FPS

MediaKind = Literal["jpeg", "png", "mp4"]
CONTENT_TYPES: dict[MediaKind, str] = {"jpeg": "image/jpeg", "png": "image/png", "mp4": "video/mp4"}
PALETTE = ((200, 80, 60), (60, 140, 200), (90, 170, 90), (220, 180, 60), (150, 90, 180), (40, 40, 40))


@dataclass(frozen=True)
class Media:
    id: str
    kind: MediaKind
    width: int
    height: int
    created_at: float
    frames: int = 0

    @property
    def filename(self) -> str:
        return f"{self.id}.{self.kind}"

    def render(self) -> bytes:
        color = PALETTE[int(self.id[1:]) % len(PALETTE)]
        if self.kind == "mp4":
            return render_mp4(self.width, self.height, self.frames, color)
        return render_image(self.kind, self.width, self.height, color)


@lru_cache(maxsize=32)
def render_image(kind: MediaKind, width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=kind.upper())
    return buffer.getvalue()


@lru_cache(maxsize=16)
def render_mp4(width: int, height: int, frames: int, color: tuple[int, int, int]) -> bytes:
    """An H.264 MP4 at Seedance's 24 fps with `frames` frames of one colour."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "45"}
        frame = av.VideoFrame.from_image(Image.new("RGB", (width, height), color)).reformat(format="yuv420p")
        for index in range(frames):
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


class MediaStore:
    def __init__(self) -> None:
        self._items: dict[str, Media] = {}
        self._ids = itertools.count(1)

    def add(self, kind: MediaKind, width: int, height: int, created_at: float, frames: int = 0) -> Media:
        media = Media(f"m{next(self._ids):06d}", kind, width, height, created_at, frames)
        self._items[media.id] = media
        return media

    def get(self, media_id: str) -> Media | None:
        return self._items.get(media_id)

    def clear(self) -> None:
        self._items.clear()
