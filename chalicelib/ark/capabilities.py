"""The one table of the Ark models arkflow can call: per model its ids and lifecycle at each provider, the API it
serves, the inputs it accepts and every request field with its allowed values, ranges and defaults, and its rate
limits (docs/ark.md, "Models" and "Capabilities").

Validation (`chalicelib.tasks.checks`), model defaults, the admin and public model bodies (`client_capabilities`),
the simulator and the web form all read it; nothing else states a limit. Where Ark's documentation is uncertain
the table holds the documented or the stricter value, and docs/ark.md says which was chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

Api = Literal["image", "video"]
Provider = Literal["volcengine", "byteplus"]
Lifecycle = Literal["active", "deprecated", "retired"]
PROVIDERS: tuple[Provider, ...] = ("volcengine", "byteplus")
LIFECYCLES: tuple[Lifecycle, ...] = ("active", "deprecated", "retired")
ENDPOINT_PREFIX = "ep-"


def provider_of(base_url: str) -> Provider:
    """The provider an `ARK_BASE_URL` points at: BytePlus ModelArk (`*.bytepluses.com`) or Volcengine Ark
    (anything else, the local simulator included)."""
    host = (urlsplit(base_url).hostname or "").lower()
    return "byteplus" if host.endswith(("bytepluses.com", "byteplus.com")) else "volcengine"


@dataclass(frozen=True)
class Range:
    """An inclusive integer range."""

    minimum: int
    maximum: int

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.minimum <= value <= self.maximum

    def text(self) -> str:
        return f"{self.minimum}-{self.maximum}"

    def as_json(self) -> dict[str, int]:
        return {"min": self.minimum, "max": self.maximum}


@dataclass(frozen=True)
class ProviderModel:
    """A model at one provider: the id it is called by, other ids it answers to, and its lifecycle there."""

    model_id: str
    status: Lifecycle = "active"
    replacement: str | None = None  # a table key
    aliases: tuple[str, ...] = ()
    note: str = ""  # what the status rests on (dates, how certain)


# --- rules shared by every model of an API -----------------------------------------------------------------------

# No hard prompt maximum is documented (guidance: <= 300 Chinese characters or <= 600 English words for images,
# <= 500 characters for video); the platform caps prompts so a typo cannot send megabytes upstream.
PROMPT_MAX_CHARS = 4000
RESULT_URL_TTL_S = 24 * 3600
VIDEO_TASK_RETENTION_S = 7 * 24 * 3600
VIDEO_STATUSES = ("queued", "running", "cancelled", "succeeded", "failed", "expired")
VIDEO_MAX_QUEUED_PER_ACCOUNT = 120  # BytePlus's documented cap; assumed for Volcengine too (docs/ark.md)


@dataclass(frozen=True)
class InputImageRules:
    """What an input image must be (reference images of Seedream; frames and reference images of Seedance)."""

    formats: tuple[str, ...]
    max_bytes: int
    max_bytes_inclusive: bool
    # Each side must be more than `min_side` px (and less than `max_side`, when set).
    min_side: int
    max_side: int | None
    aspect: tuple[float, float]
    aspect_inclusive: bool
    max_pixels: int | None


# The 2026 image doc also lists heic/heif and 30 MB; arkflow keeps the Dec-2025 (stricter) list and 10 MB, which
# every Seedream version accepts (docs/ark.md, "Uncertain values").
SEEDREAM_INPUT_IMAGES = InputImageRules(
    formats=("jpeg", "png", "webp", "bmp", "tiff", "gif"),
    max_bytes=10 * 1024 * 1024, max_bytes_inclusive=True,
    min_side=14, max_side=None,
    aspect=(1 / 16, 16.0), aspect_inclusive=True,
    max_pixels=6000 * 6000,
)
# Strictly between the bounds (the 1.0-era text), under 30 MB; heic/heif (1.5 pro on) are not offered.
SEEDANCE_INPUT_IMAGES = InputImageRules(
    formats=("jpeg", "png", "webp", "bmp", "tiff", "gif"),
    max_bytes=30 * 1024 * 1024, max_bytes_inclusive=False,
    min_side=300, max_side=6000,
    aspect=(0.4, 2.5), aspect_inclusive=False,
    max_pixels=None,
)
VIDEO_MAX_BODY_BYTES = 64 * 1024 * 1024


# --- images --------------------------------------------------------------------------------------------------

IMAGE_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9")


def _by_ratio(*sizes: tuple[int, int]) -> Mapping[str, tuple[int, int]]:
    return MappingProxyType(dict(zip(IMAGE_RATIOS, sizes, strict=True)))


# Ark's recommended pixel sizes per preset, in IMAGE_RATIOS order (the 2026 image doc).
IMAGE_PRESET_SIZES: Mapping[str, Mapping[str, tuple[int, int]]] = MappingProxyType({
    "1K": _by_ratio((1024, 1024), (1152, 864), (864, 1152), (1280, 720), (720, 1280), (1248, 832), (832, 1248),
                    (1512, 648)),
    "2K": _by_ratio((2048, 2048), (2304, 1728), (1728, 2304), (2848, 1600), (1600, 2848), (2496, 1664), (1664, 2496),
                    (3136, 1344)),
    "3K": _by_ratio((3072, 3072), (3456, 2592), (2592, 3456), (4096, 2304), (2304, 4096), (3744, 2496), (2496, 3744),
                    (4704, 2016)),
    "4K": _by_ratio((4096, 4096), (4704, 3520), (3520, 4704), (5504, 3040), (3040, 5504), (4992, 3328), (3328, 4992),
                    (6240, 2656)),
})


@dataclass(frozen=True)
class ImageCapabilities:
    size_presets: tuple[str, ...]  # upper case; Ark accepts either case
    pixels: Range  # total pixels of a `WxH` size
    max_references: int
    max_images: int | None  # the largest group (`sequential_image_generation: auto`); None: no groups
    output_formats: tuple[str, ...] = ()  # () : JPEG only, and `output_format` is not accepted
    web_search: bool = False  # `tools: [{"type": "web_search"}]`
    prompt_modes: tuple[str, ...] = ("standard",)  # `optimize_prompt_options.mode` (not sent by arkflow)
    stream: bool = True
    images_per_minute: int = 500
    default_size: str = "2048x2048"
    aspect: tuple[float, float] = (1 / 16, 16.0)
    max_total_images: int = 15  # reference images + generated images
    default_watermark: bool = True
    default_output_format: str = "jpeg"
    response_formats: tuple[str, ...] = ("url", "b64_json")
    sequential_modes: tuple[str, ...] = ("auto", "disabled")
    tool_types: tuple[str, ...] = ("web_search",)
    inputs: InputImageRules = SEEDREAM_INPUT_IMAGES


def parse_pixel_size(size: str) -> tuple[int, int] | None:
    """`"2048x2048"` -> (2048, 2048); None when it is not of the WxH form."""
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() and len(part) <= 9 for part in parts):
        return None
    return int(parts[0]), int(parts[1])


def pixel_size_problem(image: ImageCapabilities, width: int, height: int) -> str | None:
    """Why a `WxH` size is out of the model's range, or None when it is valid."""
    if width <= 0 or height <= 0:
        return "width and height must be positive"
    pixels = width * height
    if pixels not in image.pixels:
        return f"total pixels {pixels} must be within [{image.pixels.minimum}, {image.pixels.maximum}]"
    if not image.aspect[0] <= width / height <= image.aspect[1]:
        return "aspect ratio width/height must be within [1/16, 16]"
    return None


# --- videos --------------------------------------------------------------------------------------------------

VIDEO_RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
ADAPTIVE = "adaptive"
AUTO_DURATION = -1
VIDEO_FPS = 24
FRAMES = Range(29, 289)  # and 25 + 4n
EXPIRES_AFTER = Range(3600, 259200)
DEFAULT_EXPIRES_AFTER = 172800
# Documented as [-1, 2^32 - 1] in the 1.x docs and [-1, 2147483647] in the newest: the smaller bound holds for all.
SEED = Range(-1, 2**31 - 1)
PRIORITY = Range(0, 9)
SAFETY_IDENTIFIER_MAX_CHARS = 64
SERVICE_TIERS = ("default", "flex")
DRAFT_RESOLUTION = "480p"


def is_valid_frames(frames: int) -> bool:
    return frames in FRAMES and (frames - 25) % 4 == 0


def _sizes(rows: Mapping[str, tuple[tuple[int, int], ...]]) -> Mapping[str, Mapping[str, tuple[int, int]]]:
    """{resolution: (16:9, 4:3, 1:1, 3:4, 9:16, 21:9) sizes} as {resolution: {ratio: size}}."""
    return MappingProxyType({resolution: MappingProxyType(dict(zip(VIDEO_RATIOS, sizes, strict=True)))
                             for resolution, sizes in rows.items()})


# Output pixel sizes, as Ark's documentation tables them.
SEEDANCE_1_0_SIZES = _sizes({
    "480p": ((864, 480), (736, 544), (640, 640), (544, 736), (480, 864), (960, 416)),
    "720p": ((1248, 704), (1120, 832), (960, 960), (832, 1120), (704, 1248), (1504, 640)),
    "1080p": ((1920, 1088), (1664, 1248), (1440, 1440), (1248, 1664), (1088, 1920), (2176, 928)),
})
SEEDANCE_1_5_SIZES = _sizes({
    "480p": ((864, 496), (752, 560), (640, 640), (560, 752), (496, 864), (992, 432)),
    "720p": ((1280, 720), (1112, 834), (960, 960), (834, 1112), (720, 1280), (1470, 630)),
    "1080p": ((1920, 1080), (1664, 1248), (1440, 1440), (1248, 1664), (1080, 1920), (2206, 946)),
})
SEEDANCE_2_5_SIZES = _sizes({
    "480p": ((854, 480), (752, 560), (640, 640), (560, 752), (480, 854), (992, 432)),
    "720p": ((1280, 720), (1112, 834), (960, 960), (834, 1112), (720, 1280), (1470, 630)),
})


@dataclass(frozen=True)
class MediaRules:
    """Reference videos or audio (URL or `asset://` only): formats and per-item and total seconds."""

    formats: tuple[str, ...]
    seconds: Range
    total_seconds: int
    max_bytes: int


@dataclass(frozen=True)
class ReferenceRules:
    """Reference mode (`references`): how many of each kind a request may carry."""

    images: Range
    videos: int = 0
    audios: int = 0
    # Whether reference audio may come without any reference image or video.
    audio_alone: bool = False
    video_rules: MediaRules | None = None
    audio_rules: MediaRules | None = None
    # Resolutions and fields not allowed in reference mode.
    resolutions_excluded: tuple[str, ...] = ()
    camera_fixed: bool = True
    default_ratio: str = ADAPTIVE


@dataclass(frozen=True)
class VideoCapabilities:
    text: bool  # a prompt alone makes a video
    first_frame: bool
    first_last_frame: bool
    references: ReferenceRules | None
    resolutions: tuple[str, ...]
    default_resolution: str
    duration: Range
    auto_duration: bool  # duration -1: the model picks
    output_sizes: Mapping[str, Mapping[str, tuple[int, int]]]
    requests_per_minute: int
    concurrency: int  # tasks running at once per account and model at Ark
    default_duration: int = 5
    adaptive_without_image: bool = False  # `adaptive` for a text-only video (the model picks by the prompt)
    default_ratio_text: str = "16:9"
    default_ratio_frames: str = ADAPTIVE
    frames_only_adaptive: bool = False  # a first(/last)-frame task takes only `adaptive`
    frames: bool = False
    seed: bool = False
    camera_fixed: bool = False
    generate_audio: bool = False
    default_generate_audio: bool = True
    draft: bool = False
    priority: bool = False
    flex: bool = False
    output_formats: tuple[str, ...] = ()  # () : MP4 only, and `output_format` is not accepted
    default_output_format: str = "mp4"
    fps: int = VIDEO_FPS
    inputs: InputImageRules = SEEDANCE_INPUT_IMAGES
    # A clip of d seconds has d × fps frames, or one more on the models whose documented usage examples count
    # them so (docs/ark.md, "Frames and tokens"); tokens are w × h × frames / 1024.
    extra_frame: bool = False

    def frame_count(self, duration: int) -> int:
        return duration * self.fps + (1 if self.extra_frame else 0)

    @property
    def service_tiers(self) -> tuple[str, ...]:
        return SERVICE_TIERS if self.flex else SERVICE_TIERS[:1]

    @property
    def ratios(self) -> tuple[str, ...]:
        return (*VIDEO_RATIOS, ADAPTIVE)


@dataclass(frozen=True)
class ArkModel:
    key: str  # the table's id for the model, e.g. `seedance-1.5-pro`
    display_name: str
    api: Api
    providers: Mapping[Provider, ProviderModel]
    image: ImageCapabilities | None = None
    video: VideoCapabilities | None = None

    def at(self, provider: Provider) -> ProviderModel | None:
        return self.providers.get(provider)

    def ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i for entry in self.providers.values() for i in (entry.model_id, *entry.aliases)))


def _providers(volcengine: ProviderModel | None, byteplus: ProviderModel | None) -> Mapping[Provider, ProviderModel]:
    entries: dict[Provider, ProviderModel] = {}
    if volcengine:
        entries["volcengine"] = volcengine
    if byteplus:
        entries["byteplus"] = byteplus
    return MappingProxyType(entries)


_SEEDANCE_2_VIDEO = MediaRules(formats=("mp4", "mov"), seconds=Range(2, 15), total_seconds=15,
                               max_bytes=50 * 1024 * 1024)
_SEEDANCE_2_AUDIO = MediaRules(formats=("wav", "mp3"), seconds=Range(2, 15), total_seconds=15,
                               max_bytes=15 * 1024 * 1024)
_SEEDANCE_2_REFERENCES = ReferenceRules(images=Range(1, 9), videos=3, audios=3, video_rules=_SEEDANCE_2_VIDEO,
                                        audio_rules=_SEEDANCE_2_AUDIO, camera_fixed=False)
_SEEDANCE_1_0 = {"output_sizes": SEEDANCE_1_0_SIZES, "frames": True, "seed": True, "camera_fixed": True,
                 "flex": True, "duration": Range(2, 12), "auto_duration": False}
_SEEDANCE_2_0 = {"text": True, "first_frame": True, "first_last_frame": True, "references": _SEEDANCE_2_REFERENCES,
                 "default_resolution": "720p", "duration": Range(4, 15), "auto_duration": True,
                 "output_sizes": SEEDANCE_1_5_SIZES, "adaptive_without_image": True, "default_ratio_text": ADAPTIVE,
                 "generate_audio": True, "priority": True, "extra_frame": True}


MODELS: tuple[ArkModel, ...] = (
    ArkModel(
        "seedream-4.0", "Seedream 4.0", "image",
        _providers(
            ProviderModel("doubao-seedream-4-0-250828", "deprecated", "seedream-4.5",
                          note="reported delisted on some accounts in China (Oct 2026, unconfirmed)"),
            ProviderModel("seedream-4-0-250828"),
        ),
        image=ImageCapabilities(size_presets=("1K", "2K", "4K"), pixels=Range(1280 * 720, 4096 * 4096),
                                max_references=14, max_images=15, prompt_modes=("standard", "fast")),
    ),
    ArkModel(
        "seedream-4.5", "Seedream 4.5", "image",
        _providers(ProviderModel("doubao-seedream-4-5-251128"), ProviderModel("seedream-4-5-251128")),
        image=ImageCapabilities(size_presets=("2K", "4K"), pixels=Range(2560 * 1440, 4096 * 4096),
                                max_references=14, max_images=15),
    ),
    ArkModel(
        "seedream-5.0-lite", "Seedream 5.0 lite", "image",
        _providers(
            ProviderModel("doubao-seedream-5-0-260128", aliases=("doubao-seedream-5-0-lite-260128",)),
            ProviderModel("seedream-5-0-260128", aliases=("seedream-5-0-lite-260128",)),
        ),
        # `4K` is in the 2026 doc but refused on some accounts: arkflow offers 2K and 3K (WxH still reaches 4096²).
        image=ImageCapabilities(size_presets=("2K", "3K"), pixels=Range(2560 * 1440, 4096 * 4096),
                                max_references=14, max_images=15, output_formats=("jpeg", "png"), web_search=True),
    ),
    ArkModel(
        "seedance-1.0-lite-t2v", "Seedance 1.0 lite (text)", "video",
        _providers(
            ProviderModel("doubao-seedance-1-0-lite-t2v-250428", "deprecated", "seedance-1.0-pro-fast",
                          note="switched off by BytePlus on 2026-05-13; still answering in China"),
            ProviderModel("seedance-1-0-lite-t2v-250428", "retired", "seedance-1.0-pro-fast",
                          note="deprecated 2026-03-23, deactivated 2026-05-13"),
        ),
        video=VideoCapabilities(text=True, first_frame=False, first_last_frame=False, references=None,
                                resolutions=("480p", "720p", "1080p"), default_resolution="720p",
                                requests_per_minute=300, concurrency=5, **_SEEDANCE_1_0),
    ),
    ArkModel(
        "seedance-1.0-lite-i2v", "Seedance 1.0 lite (image)", "video",
        _providers(
            ProviderModel("doubao-seedance-1-0-lite-i2v-250428", "deprecated", "seedance-1.0-pro-fast",
                          note="switched off by BytePlus on 2026-05-13; still answering in China"),
            ProviderModel("seedance-1-0-lite-i2v-250428", "retired", "seedance-1.0-pro-fast",
                          note="deprecated 2026-03-23, deactivated 2026-05-13"),
        ),
        video=VideoCapabilities(
            text=False, first_frame=True, first_last_frame=True,
            references=ReferenceRules(images=Range(1, 4), resolutions_excluded=("1080p",), camera_fixed=False,
                                      default_ratio="16:9"),
            resolutions=("480p", "720p", "1080p"), default_resolution="720p",
            requests_per_minute=300, concurrency=5, **_SEEDANCE_1_0),
    ),
    ArkModel(
        "seedance-1.0-pro", "Seedance 1.0 pro", "video",
        _providers(ProviderModel("doubao-seedance-1-0-pro-250528",
                                 note="a reseller announced its retirement for 2026-07-17 (unconfirmed at Ark)"),
                   ProviderModel("seedance-1-0-pro-250528")),
        video=VideoCapabilities(text=True, first_frame=True, first_last_frame=True, references=None,
                                resolutions=("480p", "720p", "1080p"), default_resolution="1080p",
                                requests_per_minute=600, concurrency=10, **_SEEDANCE_1_0),
    ),
    ArkModel(
        "seedance-1.0-pro-fast", "Seedance 1.0 pro fast", "video",
        _providers(ProviderModel("doubao-seedance-1-0-pro-fast-251015"), ProviderModel("seedance-1-0-pro-fast-251015")),
        video=VideoCapabilities(text=True, first_frame=True, first_last_frame=False, references=None,
                                resolutions=("480p", "720p", "1080p"), default_resolution="1080p",
                                requests_per_minute=600, concurrency=10, **_SEEDANCE_1_0),
    ),
    ArkModel(
        "seedance-1.5-pro", "Seedance 1.5 pro", "video",
        _providers(ProviderModel("doubao-seedance-1-5-pro-251215"), ProviderModel("seedance-1-5-pro-251215")),
        # 1080p is documented by BytePlus only, late: arkflow offers 480p and 720p.
        video=VideoCapabilities(text=True, first_frame=True, first_last_frame=True, references=None,
                                resolutions=("480p", "720p"), default_resolution="720p",
                                duration=Range(4, 12), auto_duration=True, output_sizes=SEEDANCE_1_5_SIZES,
                                requests_per_minute=600, concurrency=10, adaptive_without_image=True,
                                default_ratio_text=ADAPTIVE, seed=True, camera_fixed=True, generate_audio=True,
                                draft=True, flex=True, extra_frame=True),
    ),
    ArkModel(
        "seedance-2.0", "Seedance 2.0", "video",
        _providers(ProviderModel("doubao-seedance-2-0-260128"), ProviderModel("dreamina-seedance-2-0-260128")),
        video=VideoCapabilities(resolutions=("480p", "720p", "1080p"), requests_per_minute=600, concurrency=10,
                                **_SEEDANCE_2_0),
    ),
    ArkModel(
        "seedance-2.0-fast", "Seedance 2.0 fast", "video",
        _providers(ProviderModel("doubao-seedance-2-0-fast-260128"),
                   ProviderModel("dreamina-seedance-2-0-fast-260128")),
        video=VideoCapabilities(resolutions=("480p", "720p"), requests_per_minute=600, concurrency=10,
                                **_SEEDANCE_2_0),
    ),
    ArkModel(
        "seedance-2.0-mini", "Seedance 2.0 mini", "video",
        _providers(ProviderModel("doubao-seedance-2-0-mini-260615"),
                   ProviderModel("dreamina-seedance-2-0-mini-260615")),
        # No documented limits: those of Seedance 1.0 lite, the smallest documented.
        video=VideoCapabilities(resolutions=("480p", "720p"), requests_per_minute=300, concurrency=5,
                                **_SEEDANCE_2_0),
    ),
    ArkModel(
        "seedance-2.5", "Seedance 2.5", "video",
        _providers(ProviderModel("doubao-seedance-2-5-260628"), ProviderModel("dreamina-seedance-2-5-260628")),
        video=VideoCapabilities(
            text=True, first_frame=True, first_last_frame=True,
            references=ReferenceRules(
                images=Range(1, 30), videos=10, audios=10, audio_alone=True, camera_fixed=False,
                video_rules=MediaRules(formats=("mp4", "mov"), seconds=Range(2, 30), total_seconds=30,
                                       max_bytes=200 * 1024 * 1024),
                audio_rules=MediaRules(formats=("wav", "mp3"), seconds=Range(2, 30), total_seconds=30,
                                       max_bytes=15 * 1024 * 1024)),
            resolutions=("480p", "720p"), default_resolution="720p", duration=Range(4, 30), auto_duration=True,
            default_duration=AUTO_DURATION, output_sizes=SEEDANCE_2_5_SIZES, requests_per_minute=300,
            concurrency=5, adaptive_without_image=True, default_ratio_text=ADAPTIVE, frames_only_adaptive=True,
            generate_audio=True, priority=True, output_formats=("mp4", "mov"), extra_frame=True),
    ),
)

_BY_KEY: Mapping[str, ArkModel] = MappingProxyType({model.key: model for model in MODELS})
_BY_ID: Mapping[str, ArkModel] = MappingProxyType({model_id: model for model in MODELS for model_id in model.ids()})


def model(key: str) -> ArkModel:
    """The table's model by its key (KeyError when there is none)."""
    return _BY_KEY[key]


def find(name: str) -> ArkModel | None:
    """The table's model named by its key or by any provider's id for it (case-insensitive), or None."""
    name = name.strip().lower()
    return _BY_KEY.get(name) or _BY_ID.get(name)


def is_endpoint(upstream_model: str) -> bool:
    return upstream_model.startswith(ENDPOINT_PREFIX)


@dataclass(frozen=True)
class ModelStatus:
    """A model's status at the deployment's provider, and what replaces it."""

    status: Lifecycle
    replacement: str | None
    note: str = ""


def lifecycle(entry: ArkModel, provider: Provider) -> ModelStatus:
    """A model the provider does not offer counts as retired there."""
    at = entry.at(provider)
    if at is None:
        return ModelStatus("retired", None, f"not offered by {provider}")
    return ModelStatus(at.status, at.replacement, at.note)


def ark_model_id(entry: ArkModel, provider: Provider, upstream_model: str) -> str:
    """What a call names as `model`: an endpoint id as configured, else the provider's id for the table's model."""
    if is_endpoint(upstream_model):
        return upstream_model
    at = entry.at(provider)
    return at.model_id if at is not None else upstream_model


# --- what clients are shown ------------------------------------------------------------------------------------

def _enum(values: tuple[Any, ...], default: Any) -> dict[str, Any]:
    return {"type": "enum", "values": list(values), "default": default}


def _boolean(default: bool) -> dict[str, Any]:
    return {"type": "boolean", "default": default}


def _integer(span: Range, default: Any = None, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", **span.as_json(), "default": default, **extra}


def client_capabilities(entry: ArkModel) -> dict[str, Any]:
    """What a client needs to build a form for the model (docs/api.md, "Capabilities"): its fields by request path
    (type, allowed values or range, Ark's default, and the rules that tie fields together), its input modes, and
    the prompt's limit."""
    if entry.image is not None:
        return _image_capabilities(entry.key, entry.image)
    assert entry.video is not None
    return _video_capabilities(entry.key, entry.video)


def _image_capabilities(key: str, image: ImageCapabilities) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "size": {"type": "size", "presets": list(image.size_presets), "pixels": image.pixels.as_json(),
                 "aspect": {"min": image.aspect[0], "max": image.aspect[1]}, "default": image.default_size},
        "watermark": _boolean(image.default_watermark),
    }
    if image.max_images is not None:
        fields["max_images"] = _integer(Range(1, image.max_images), 1,
                                        rule=f"reference images + max_images <= {image.max_total_images}",
                                        max_total=image.max_total_images)
    if image.output_formats:
        fields["output_format"] = _enum(image.output_formats, image.default_output_format)
    if image.web_search:
        fields["tools"] = {"type": "tools", "values": list(image.tool_types), "default": []}
    return {
        "api": "image",
        "family": key,
        "prompt": {"required": True, "max_chars": PROMPT_MAX_CHARS},
        "fields": fields,
        "input_modes": [
            {"mode": "text"},
            {"mode": "reference_images", "images": Range(1, image.max_references).as_json()},
        ],
        "inputs": _input_rules(image.inputs),
    }


def _video_capabilities(key: str, video: VideoCapabilities) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "params.resolution": _enum(video.resolutions, video.default_resolution),
        "params.ratio": {**_enum(video.ratios, {"text": video.default_ratio_text, "frames": video.default_ratio_frames,
                                                **({"references": video.references.default_ratio}
                                                   if video.references else {})}),
                         "adaptive_without_image": video.adaptive_without_image,
                         "frames_only_adaptive": video.frames_only_adaptive},
        "params.duration": _integer(video.duration, video.default_duration,
                                    auto=AUTO_DURATION if video.auto_duration else None),
        "params.watermark": _boolean(False),
        "params.return_last_frame": _boolean(False),
        "params.service_tier": _enum(video.service_tiers, "default"),
        "params.execution_expires_after": _integer(EXPIRES_AFTER, DEFAULT_EXPIRES_AFTER),
    }
    if video.frames:
        fields["params.frames"] = _integer(FRAMES, None, rule="25 + 4n", not_with=["params.duration"])
    if video.seed:
        fields["params.seed"] = _integer(SEED, -1)
    if video.camera_fixed:
        fields["params.camera_fixed"] = _boolean(False)
        if video.references is not None and not video.references.camera_fixed:
            fields["params.camera_fixed"]["not_with"] = ["references"]
    if video.generate_audio:
        fields["params.generate_audio"] = _boolean(video.default_generate_audio)
    if video.draft:
        fields["params.draft"] = {**_boolean(False), "requires": {"params.resolution": DRAFT_RESOLUTION},
                                  "not_with": ["params.return_last_frame", "params.service_tier=flex"],
                                  "render": True}
    if video.priority:
        fields["params.priority"] = _integer(PRIORITY, 0, not_with=["params.service_tier=flex"])
    if video.output_formats:
        fields["params.output_format"] = _enum(video.output_formats, video.default_output_format)
    modes: list[dict[str, Any]] = []
    if video.text:
        modes.append({"mode": "text"})
    if video.first_frame:
        modes.append({"mode": "first_frame", "images": 1})
    if video.first_last_frame:
        modes.append({"mode": "first_last_frame", "images": 2})
    if video.references is not None:
        refs = video.references
        modes.append({
            "mode": "references",
            "references": {
                "image": refs.images.as_json(),
                "video": {"min": 0, "max": refs.videos},
                "audio": {"min": 0, "max": refs.audios, "alone": refs.audio_alone},
            },
            "resolutions_excluded": list(refs.resolutions_excluded),
        })
    return {
        "api": "video",
        "family": key,
        "prompt": {"required": not (video.first_frame or video.references), "max_chars": PROMPT_MAX_CHARS},
        "fields": fields,
        "input_modes": modes,
        "inputs": _input_rules(video.inputs),
    }


def _input_rules(rules: InputImageRules) -> dict[str, Any]:
    """Each bound is exclusive (`min_side`: every side is more than it) unless `inclusive` says otherwise."""
    return {"image": {
        "formats": list(rules.formats),
        "max_bytes": rules.max_bytes, "max_bytes_inclusive": rules.max_bytes_inclusive,
        "min_side": rules.min_side, "max_side": rules.max_side,
        "aspect": {"min": rules.aspect[0], "max": rules.aspect[1], "inclusive": rules.aspect_inclusive},
        "max_pixels": rules.max_pixels,
    }}
