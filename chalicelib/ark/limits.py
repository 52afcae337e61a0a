"""Ark's documented limits for Seedream 4.5 and Seedance 1.0 pro (docs/ark.md: "Images", "Input images", "Videos",
"Limits").

The platform's own validation and the local Ark simulator both read these, so a limit is changed in one place.
"""

from __future__ import annotations

# --- Seedream 4.5 images (docs/ark.md, "Images" and "Input images") ---
IMAGE_SIZE_PRESETS = ("2K", "4K")  # `1K` is 4.0-family only; case-insensitive on the wire
IMAGE_SIZE_PRESETS_4_0 = ("1K", "2K", "4K")
IMAGE_DEFAULT_SIZE = "2048x2048"
IMAGE_MIN_PIXELS = 2560 * 1440  # 3,686,400
IMAGE_MAX_PIXELS = 4096 * 4096  # 16,777,216
IMAGE_MIN_ASPECT = 1 / 16
IMAGE_MAX_ASPECT = 16.0
IMAGE_MAX_REFERENCE_IMAGES = 14
IMAGE_MAX_IMAGES = 15  # sequential_image_generation_options.max_images range [1, 15]
IMAGE_MAX_TOTAL_IMAGES = 15  # reference images + generated images
IMAGE_INPUT_FORMATS = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
IMAGE_INPUT_MIN_SIDE_EXCLUSIVE = 14  # each side must be > 14 px
IMAGE_INPUT_MAX_PIXELS = 6000 * 6000
IMAGE_INPUT_MAX_BYTES = 10 * 1024 * 1024
IMAGE_SEQUENTIAL_MODES = ("auto", "disabled")
IMAGE_RESPONSE_FORMATS = ("url", "b64_json")
# No hard maximum is documented; guidance is <= 300 Chinese characters or <= 600 English words.
# The platform caps prompts so a typo cannot send megabytes upstream.
PROMPT_MAX_CHARS = 4000

# --- Seedance 1.0 pro video (docs/ark.md, "Videos" and "Input images") ---
VIDEO_RESOLUTIONS = ("480p", "720p", "1080p")
VIDEO_DEFAULT_RESOLUTION = "1080p"
VIDEO_RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive")
VIDEO_MIN_DURATION = 2
VIDEO_MAX_DURATION = 12
VIDEO_DEFAULT_DURATION = 5
VIDEO_MIN_FRAMES = 29
VIDEO_MAX_FRAMES = 289  # frames must be 25 + 4n within [29, 289]
VIDEO_FPS = 24
VIDEO_MIN_SEED = -1
VIDEO_MAX_SEED = 2**32 - 1
VIDEO_SERVICE_TIERS = ("default", "flex")
VIDEO_MIN_EXPIRES_AFTER = 3600
VIDEO_MAX_EXPIRES_AFTER = 259200
VIDEO_DEFAULT_EXPIRES_AFTER = 172800
VIDEO_INPUT_FORMATS = IMAGE_INPUT_FORMATS
VIDEO_INPUT_MIN_ASPECT_EXCLUSIVE = 0.4
VIDEO_INPUT_MAX_ASPECT_EXCLUSIVE = 2.5
VIDEO_INPUT_MIN_SIDE_EXCLUSIVE = 300
VIDEO_INPUT_MAX_SIDE_EXCLUSIVE = 6000
VIDEO_INPUT_MAX_BYTES = 30 * 1024 * 1024
VIDEO_MAX_BODY_BYTES = 64 * 1024 * 1024
VIDEO_MAX_IMAGES = 2  # first frame, or first + last frame
VIDEO_STATUSES = ("queued", "running", "cancelled", "succeeded", "failed", "expired")

# Output pixel sizes of the Seedance 1.0 series, as Ark's documentation tables them.
VIDEO_OUTPUT_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "16:9": {"480p": (864, 480), "720p": (1248, 704), "1080p": (1920, 1088)},
    "4:3": {"480p": (736, 544), "720p": (1120, 832), "1080p": (1664, 1248)},
    "1:1": {"480p": (640, 640), "720p": (960, 960), "1080p": (1440, 1440)},
    "3:4": {"480p": (544, 736), "720p": (832, 1120), "1080p": (1248, 1664)},
    "9:16": {"480p": (480, 864), "720p": (704, 1248), "1080p": (1088, 1920)},
    "21:9": {"480p": (960, 416), "720p": (1504, 640), "1080p": (2176, 928)},
}

# --- Account limits (docs/ark.md, "Limits") ---
SEEDREAM_IMAGES_PER_MINUTE = 500
SEEDANCE_REQUESTS_PER_MINUTE = 600
SEEDANCE_RUNNING_PER_ACCOUNT_MODEL = 10
SEEDANCE_MAX_QUEUED_PER_ACCOUNT = 120
RESULT_URL_TTL_S = 24 * 3600
VIDEO_TASK_RETENTION_S = 7 * 24 * 3600


def is_valid_frames(frames: int) -> bool:
    return VIDEO_MIN_FRAMES <= frames <= VIDEO_MAX_FRAMES and (frames - 25) % 4 == 0


def parse_pixel_size(size: str) -> tuple[int, int] | None:
    """`"2048x2048"` -> (2048, 2048); None when it is not of the WxH form."""
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() and len(part) <= 9 for part in parts):
        return None
    return int(parts[0]), int(parts[1])


def pixel_size_problem(width: int, height: int) -> str | None:
    """Why a Seedream 4.5 `WxH` size is out of range, or None when it is valid."""
    if width <= 0 or height <= 0:
        return "width and height must be positive"
    pixels = width * height
    if not IMAGE_MIN_PIXELS <= pixels <= IMAGE_MAX_PIXELS:
        return f"total pixels {pixels} must be within [{IMAGE_MIN_PIXELS}, {IMAGE_MAX_PIXELS}]"
    if not IMAGE_MIN_ASPECT <= width / height <= IMAGE_MAX_ASPECT:
        return "aspect ratio width/height must be within [1/16, 16]"
    return None
