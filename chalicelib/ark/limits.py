"""The simulator's names for Seedream 4.5's and Seedance 1.0 pro's limits, all read from the capability table
(`chalicelib.ark.capabilities`, the one source). arkflow itself reads the table; this view stays only until
`arksim/` does too, and states no value of its own."""

from __future__ import annotations

from chalicelib.ark import capabilities as _table

_IMAGE = _table.model("seedream-4.5").image
_VIDEO = _table.model("seedance-1.0-pro").video
assert _IMAGE is not None and _VIDEO is not None

IMAGE_SIZE_PRESETS = _IMAGE.size_presets
IMAGE_SIZE_PRESETS_4_0 = _table.model("seedream-4.0").image.size_presets  # type: ignore[union-attr]
IMAGE_DEFAULT_SIZE = _IMAGE.default_size
IMAGE_MIN_PIXELS = _IMAGE.pixels.minimum
IMAGE_MAX_PIXELS = _IMAGE.pixels.maximum
IMAGE_MIN_ASPECT, IMAGE_MAX_ASPECT = _IMAGE.aspect
IMAGE_MAX_REFERENCE_IMAGES = _IMAGE.max_references
IMAGE_MAX_IMAGES = _IMAGE.max_images
IMAGE_MAX_TOTAL_IMAGES = _IMAGE.max_total_images
IMAGE_INPUT_FORMATS = _IMAGE.inputs.formats
IMAGE_INPUT_MIN_SIDE_EXCLUSIVE = _IMAGE.inputs.min_side
IMAGE_INPUT_MAX_PIXELS = _IMAGE.inputs.max_pixels
IMAGE_INPUT_MAX_BYTES = _IMAGE.inputs.max_bytes
IMAGE_SEQUENTIAL_MODES = _IMAGE.sequential_modes
IMAGE_RESPONSE_FORMATS = _IMAGE.response_formats
PROMPT_MAX_CHARS = _table.PROMPT_MAX_CHARS

VIDEO_RESOLUTIONS = _VIDEO.resolutions
VIDEO_DEFAULT_RESOLUTION = _VIDEO.default_resolution
VIDEO_RATIOS = _VIDEO.ratios
VIDEO_MIN_DURATION = _VIDEO.duration.minimum
VIDEO_MAX_DURATION = _VIDEO.duration.maximum
VIDEO_DEFAULT_DURATION = _VIDEO.default_duration
VIDEO_MIN_FRAMES = _table.FRAMES.minimum
VIDEO_MAX_FRAMES = _table.FRAMES.maximum
VIDEO_FPS = _VIDEO.fps
VIDEO_MIN_SEED = _table.SEED.minimum
VIDEO_MAX_SEED = _table.SEED.maximum
VIDEO_SERVICE_TIERS = _table.SERVICE_TIERS
VIDEO_MIN_EXPIRES_AFTER = _table.EXPIRES_AFTER.minimum
VIDEO_MAX_EXPIRES_AFTER = _table.EXPIRES_AFTER.maximum
VIDEO_DEFAULT_EXPIRES_AFTER = _table.DEFAULT_EXPIRES_AFTER
VIDEO_INPUT_FORMATS = _VIDEO.inputs.formats
VIDEO_INPUT_MIN_ASPECT_EXCLUSIVE, VIDEO_INPUT_MAX_ASPECT_EXCLUSIVE = _VIDEO.inputs.aspect
VIDEO_INPUT_MIN_SIDE_EXCLUSIVE = _VIDEO.inputs.min_side
VIDEO_INPUT_MAX_SIDE_EXCLUSIVE = _VIDEO.inputs.max_side
VIDEO_INPUT_MAX_BYTES = _VIDEO.inputs.max_bytes
VIDEO_MAX_BODY_BYTES = _table.VIDEO_MAX_BODY_BYTES
VIDEO_MAX_IMAGES = 2  # first frame, or first + last frame
VIDEO_STATUSES = _table.VIDEO_STATUSES
VIDEO_OUTPUT_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    ratio: {resolution: sizes[ratio] for resolution, sizes in _VIDEO.output_sizes.items()}
    for ratio in _table.VIDEO_RATIOS
}

SEEDREAM_IMAGES_PER_MINUTE = _IMAGE.images_per_minute
SEEDANCE_REQUESTS_PER_MINUTE = _VIDEO.requests_per_minute
SEEDANCE_RUNNING_PER_ACCOUNT_MODEL = _VIDEO.concurrency
SEEDANCE_MAX_QUEUED_PER_ACCOUNT = _table.VIDEO_MAX_QUEUED_PER_ACCOUNT
RESULT_URL_TTL_S = _table.RESULT_URL_TTL_S
VIDEO_TASK_RETENTION_S = _table.VIDEO_TASK_RETENTION_S

is_valid_frames = _table.is_valid_frames
parse_pixel_size = _table.parse_pixel_size


def pixel_size_problem(width: int, height: int) -> str | None:
    """Why a Seedream 4.5 `WxH` size is out of range, or None when it is valid."""
    return _table.pixel_size_problem(_IMAGE, width, height)
