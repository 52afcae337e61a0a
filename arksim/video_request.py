"""Reading a Seedance create body against the model's row of the capability table (docs/ark.md, "Videos"): its
content (text, first/last frames, reference media or a draft to render), every body field, and the weakly
validated `--flag` prompt suffixes. The result is what the task will make."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from arksim.errors import invalid, missing
from arksim.fields import optional_bool, optional_enum, optional_int, optional_str
from arksim.inputs import InputImage, inspect_image
from arksim.prompts import requested_aspect
from chalicelib.ark.capabilities import (
    ADAPTIVE,
    AUTO_DURATION,
    DEFAULT_EXPIRES_AFTER,
    DRAFT_RESOLUTION,
    EXPIRES_AFTER,
    FRAMES,
    PRIORITY,
    SAFETY_IDENTIFIER_MAX_CHARS,
    SEED,
    VIDEO_RATIOS,
    MediaRules,
    VideoCapabilities,
    is_valid_frames,
)

if TYPE_CHECKING:
    from arksim.simulator import Simulator, Target
    from arksim.video import VideoTask

FRAME_ROLES = ("first_frame", "last_frame")
REFERENCE_ROLES = {"image_url": "reference_image", "video_url": "reference_video", "audio_url": "reference_audio"}
# Seconds an auto (-1) duration becomes: the documented default clip length.
AUTO_DURATION_S = 5
# Fields Ark documents for some model in the table's line-up, but that the table gives no model.
NEVER_SUPPORTED = ("tools", "omni_reference_task_type")
FLAG = re.compile(r"--(\w+)\s+(\S+)")
FLAG_NAMES = {
    "resolution": "resolution", "rs": "resolution",
    "ratio": "ratio", "rt": "ratio",
    "duration": "duration", "dur": "duration",
    "frames": "frames",
    "seed": "seed",
}
# What a render takes from its draft, so its body may not set it.
RENDER_REUSES = ("ratio", "duration", "frames", "seed", "generate_audio", "camera_fixed")
MIXED_MODES = "first/last frame content cannot be mixed with reference media content"


@dataclass(frozen=True)
class Content:
    prompt: str
    frames: list[InputImage]  # a first frame, or a first and a last frame (first one first)
    reference_images: list[InputImage]
    reference_videos: int
    reference_audios: int
    draft_task_id: str | None

    @property
    def references(self) -> bool:
        return bool(self.reference_images or self.reference_videos or self.reference_audios)


@dataclass(frozen=True)
class VideoSpec:
    """What a create body asks for, validated and with Ark's defaults applied."""

    prompt: str
    resolution: str
    ratio: str  # resolved: never `adaptive`
    duration: int | None  # returned as asked (frames-based tasks return `frames` instead)
    frames: int | None
    frame_count: int
    seed: int
    generate_audio: bool | None  # None: the model has no audio
    draft: bool | None  # None: the model has no drafts
    draft_task_id: str | None
    priority: int | None
    output_format: str
    return_last_frame: bool
    service_tier: str
    execution_expires_after: int
    callback_url: str | None
    safety_identifier: str | None


def unsupported_fields(video: VideoCapabilities) -> tuple[str, ...]:
    """The create body's fields this model does not accept, as its row of the capability table says."""
    optional = {"frames": video.frames, "seed": video.seed, "camera_fixed": video.camera_fixed,
                "generate_audio": video.generate_audio, "draft": video.draft, "priority": video.priority,
                "output_format": bool(video.output_formats)}
    return (*(name for name, supported in optional.items() if not supported), *NEVER_SUPPORTED)


def read_create(sim: Simulator, target: Target, body: dict[str, Any]) -> VideoSpec:
    caps = target.video
    sim.refuse_unsupported(target, body, unsupported_fields(caps))
    content = _content(sim, body.get("content"), target)
    draft_of = _draft_source(sim, target, content.draft_task_id) if content.draft_task_id else None
    reused = draft_of.spec if draft_of is not None else None
    prompt = reused.prompt if reused is not None else content.prompt
    flags = _prompt_flags(prompt, caps)

    draft = bool(optional_bool(body, "draft")) if caps.draft else None
    if draft and reused is not None:
        raise invalid("draft", "a draft task is rendered in full, not drafted again")
    resolution = optional_enum(body, "resolution", caps.resolutions) or flags.get("resolution")
    if draft and resolution not in (None, DRAFT_RESOLUTION):
        raise invalid("resolution", f"a draft is made at {DRAFT_RESOLUTION}")
    resolution = resolution or (DRAFT_RESOLUTION if draft else caps.default_resolution)
    if content.references and caps.references and resolution in caps.references.resolutions_excluded:
        raise invalid("resolution", f"{resolution} is not available with reference images")

    if reused is not None:  # what a render reuses from its draft
        for name in RENDER_REUSES:
            if body.get(name) is not None:
                raise invalid(name, "a render takes it from its draft")
        ratio, duration, frames, seed = reused.ratio, reused.duration, None, reused.seed
        generate_audio = reused.generate_audio
    else:
        ratio = _ratio(body, flags, caps, content)
        frames = optional_int(body, "frames", FRAMES.minimum, FRAMES.maximum) if caps.frames else None
        if frames is not None and not is_valid_frames(frames):
            raise invalid("frames", f"must be 25 + 4n within [{FRAMES.minimum}, {FRAMES.maximum}]")
        duration = _duration(body, caps)
        if frames is None and duration is None:
            frames = flags.get("frames")
            duration = None if frames is not None else flags.get("duration", caps.default_duration)
        seed = optional_int(body, "seed", SEED.minimum, SEED.maximum) if caps.seed else None
        seed = flags.get("seed", -1) if seed is None else seed
        if seed == -1:
            seed = sim.random.randint(0, SEED.maximum)
        generate_audio = None
        if caps.generate_audio:
            asked = optional_bool(body, "generate_audio")
            generate_audio = caps.default_generate_audio if asked is None else asked
    if caps.camera_fixed:
        camera_fixed = optional_bool(body, "camera_fixed")
        if camera_fixed is not None and content.references and caps.references and not caps.references.camera_fixed:
            raise invalid("camera_fixed", "is not available with reference images")
    optional_bool(body, "watermark")  # accepted; the simulator's results carry no mark
    return_last_frame = bool(optional_bool(body, "return_last_frame"))
    service_tier = optional_enum(body, "service_tier", caps.service_tiers) or "default"
    priority = optional_int(body, "priority", PRIORITY.minimum, PRIORITY.maximum) if caps.priority else None
    if draft and return_last_frame:
        raise invalid("return_last_frame", "a draft has no last frame")
    if service_tier == "flex" and (draft or priority is not None):
        raise invalid("service_tier", "flex serves neither drafts nor priorities")
    output_format = (optional_enum(body, "output_format", caps.output_formats) if caps.output_formats else None)
    expires_after = optional_int(body, "execution_expires_after", EXPIRES_AFTER.minimum, EXPIRES_AFTER.maximum)
    callback_url = optional_str(body, "callback_url")
    if callback_url is not None and not callback_url.startswith(("http://", "https://")):
        raise invalid("callback_url", "must be an http(s) URL")
    safety_identifier = optional_str(body, "safety_identifier", max_length=SAFETY_IDENTIFIER_MAX_CHARS)
    sim.check_input_moderation(prompt)

    seconds = AUTO_DURATION_S if duration == AUTO_DURATION else duration
    frame_count = frames if frames is not None else caps.frame_count(seconds or 0)
    return VideoSpec(
        prompt=prompt, resolution=resolution, ratio=ratio,
        # An auto duration is answered with the seconds the model chose: floor(frames / fps).
        duration=frame_count // caps.fps if duration == AUTO_DURATION else duration,
        frames=frames, frame_count=frame_count, seed=seed, generate_audio=generate_audio,
        draft=(False if reused is not None else draft), draft_task_id=content.draft_task_id,
        # Echoed (as Ark's examples show) with its default when the model has priorities.
        priority=priority if priority is not None or not caps.priority else PRIORITY.minimum,
        output_format=output_format or caps.default_output_format, return_last_frame=return_last_frame,
        service_tier=service_tier, execution_expires_after=expires_after or DEFAULT_EXPIRES_AFTER,
        callback_url=callback_url, safety_identifier=safety_identifier,
    )


def _duration(body: dict[str, Any], caps: VideoCapabilities) -> int | None:
    low, high = caps.duration.minimum, caps.duration.maximum
    if not caps.auto_duration:
        return optional_int(body, "duration", low, high)
    value = body.get("duration")
    if isinstance(value, int) and not isinstance(value, bool) and value == AUTO_DURATION:
        return AUTO_DURATION
    if value is not None and value not in caps.duration:
        raise invalid("duration", f"must be {AUTO_DURATION} (auto) or an integer within [{low}, {high}]")
    return value


def _ratio(body: dict[str, Any], flags: dict[str, Any], caps: VideoCapabilities, content: Content) -> str:
    ratio = optional_enum(body, "ratio", caps.ratios) or flags.get("ratio")
    if content.references and caps.references is not None:
        ratio = ratio or caps.references.default_ratio
        shaped_by = content.reference_images[0] if content.reference_images else None
    elif content.frames:
        ratio = ratio or caps.default_ratio_frames
        if caps.frames_only_adaptive and ratio != ADAPTIVE:
            raise invalid("ratio", "first and last frame tasks take only `adaptive`")
        shaped_by = content.frames[0]
    else:
        ratio = ratio or caps.default_ratio_text
        if ratio == ADAPTIVE and not caps.adaptive_without_image:
            raise invalid("ratio", "`adaptive` needs a first-frame image")
        shaped_by = None
    if ratio != ADAPTIVE:
        return ratio
    if shaped_by is not None and shaped_by.width and shaped_by.height:
        return _nearest_ratio(caps, shaped_by.width, shaped_by.height)
    # A text-only adaptive video (or an unreadable image): the model picks by the prompt.
    asked = requested_aspect(content.prompt)
    return asked if asked in VIDEO_RATIOS else "16:9"


def _nearest_ratio(caps: VideoCapabilities, width: int, height: int) -> str:
    sizes = caps.output_sizes[caps.default_resolution]
    aspect = math.log(width / height)
    return min(sizes, key=lambda ratio: abs(math.log(sizes[ratio][0] / sizes[ratio][1]) - aspect))


# --- content ------------------------------------------------------------------------------------------------------

def _content(sim: Simulator, content: Any, target: Target) -> Content:
    caps, model = target.video, target.model_id
    if content is None or content == []:
        raise missing("content")
    if not isinstance(content, list) or not all(isinstance(item, dict) for item in content):
        raise invalid("content", "must be a list of objects")
    texts: list[str] = []
    frames: list[tuple[str | None, InputImage]] = []
    reference_images: list[InputImage] = []
    videos = audios = 0
    drafts: list[str] = []
    for item in content:
        kind, role = item.get("type"), item.get("role")
        if kind == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise invalid("content.text", "must be a string")
            texts.append(text)
        elif kind == "image_url" and role in (None, *FRAME_ROLES):
            frames.append((role, _image(sim, item, caps)))
        elif kind in REFERENCE_ROLES and role in (None, REFERENCE_ROLES[kind]) and (kind != "image_url" or role):
            if caps.references is None:
                raise invalid("content.role", f"reference media are not supported by model {model}")
            if kind == "image_url":
                reference_images.append(_reference_image(sim, item, caps))
            elif kind == "video_url":
                videos += _media_url(item, "video_url", caps.references.video_rules, model, data_uri=False)
            else:
                audios += _media_url(item, "audio_url", caps.references.audio_rules, model, data_uri=True)
        elif kind == "draft_task" and caps.draft:
            draft = item.get("draft_task")
            draft_id = draft.get("id") if isinstance(draft, dict) else None
            if not isinstance(draft_id, str) or not draft_id:
                raise missing("content.draft_task.id")
            drafts.append(draft_id)
        elif kind in ("image_url", *REFERENCE_ROLES):
            raise invalid("content.role", f"`{role}` is not supported by model {model}")
        else:
            raise invalid("content.type", f"`{kind}` is not supported by model {model}")
    if len(texts) > 1:
        raise invalid("content", "at most one text item is allowed")
    if drafts:
        if len(content) > 1:
            raise invalid("content", "a draft task is rendered from its id alone")
        return Content("", [], [], 0, 0, drafts[0])
    prompt = texts[0] if texts else ""
    result = Content(prompt, _frames(frames, caps, model), reference_images, videos, audios, None)
    if frames and result.references:
        raise invalid("content", MIXED_MODES)
    if result.references:
        _check_reference_counts(result, caps, model)
    elif not frames and not (texts and caps.text):
        raise missing("content") if not texts else invalid("content", f"model {model} needs an image")
    return result


def _frames(frames: list[tuple[str | None, InputImage]], caps: VideoCapabilities, model: str) -> list[InputImage]:
    if not frames:
        return []
    roles = [role for role, _ in frames]
    if len(frames) == 1:
        if roles[0] not in (None, "first_frame"):
            raise invalid("content.role", "a single image must be the first frame")
        if not caps.first_frame:
            raise invalid("content.role", f"model {model} does not take a first frame")
        return [frames[0][1]]
    if len(frames) > 2:
        raise invalid("content", "at most 2 images (first and last frame)")
    if sorted(role or "" for role in roles) != sorted(FRAME_ROLES):
        raise invalid("content.role", "two images need the roles first_frame and last_frame")
    if not caps.first_last_frame:
        raise invalid("content.role", f"model {model} does not support a last frame")
    ordered = sorted(frames, key=lambda frame: FRAME_ROLES.index(frame[0] or ""))
    return [image for _, image in ordered]  # the first frame decides an adaptive ratio


def _check_reference_counts(content: Content, caps: VideoCapabilities, model: str) -> None:
    refs = caps.references
    assert refs is not None
    images = len(content.reference_images)
    if images > refs.images.maximum or (images < refs.images.minimum and not content.reference_videos
                                         and not content.reference_audios):
        raise invalid("content", f"model {model} takes {refs.images.minimum} to {refs.images.maximum} "
                                 "reference images")
    if content.reference_videos > refs.videos:
        raise invalid("content", f"model {model} takes at most {refs.videos} reference videos")
    if content.reference_audios > refs.audios:
        raise invalid("content", f"model {model} takes at most {refs.audios} reference audios")
    if content.reference_audios and not (images or content.reference_videos) and not refs.audio_alone:
        raise invalid("content", "reference audio needs a reference image or video beside it")


def _image(sim: Simulator, item: dict[str, Any], caps: VideoCapabilities) -> InputImage:
    image_url = item.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else None
    rules = caps.inputs
    found = inspect_image(url, "content.image_url", rules.formats, sim.media)
    max_bytes = sim.config.max_input_image_bytes or rules.max_bytes
    if found.size_bytes is not None and found.size_bytes >= max_bytes + (1 if rules.max_bytes_inclusive else 0):
        raise invalid("content.image_url", f"each image must be smaller than {max_bytes} bytes")
    if found.width is None or found.height is None:
        return found
    low, high = rules.min_side, rules.max_side or math.inf
    if not (low < found.width < high and low < found.height < high):
        raise invalid("content.image_url", f"each side must be within ({low}, {rules.max_side}) px")
    aspect = found.width / found.height
    if not rules.aspect[0] < aspect < rules.aspect[1]:
        raise invalid("content.image_url",
                      f"the aspect ratio width/height must be within ({rules.aspect[0]}, {rules.aspect[1]})")
    return found


def _reference_image(sim: Simulator, item: dict[str, Any], caps: VideoCapabilities) -> InputImage:
    """A reference image: like a frame, or an `asset://` id of the account's media library (not looked into)."""
    image_url = item.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if isinstance(url, str) and url.startswith("asset://") and len(url) > len("asset://"):
        return InputImage()
    return _image(sim, item, caps)


def _media_url(item: dict[str, Any], kind: str, rules: MediaRules | None, model: str, data_uri: bool) -> int:
    """A reference video or audio: an http(s) or `asset://` URL (audio also as a data URI). Remote media are not
    fetched, so their length and size go unchecked."""
    if rules is None:
        raise invalid("content.type", f"`{kind}` is not supported by model {model}")
    holder = item.get(kind)
    url = holder.get("url") if isinstance(holder, dict) else None
    param = f"content.{kind}"
    if not isinstance(url, str) or not url.strip():
        raise missing(param)
    medium = kind.removesuffix("_url")
    if url.startswith(f"data:{medium}/"):
        declared = url[len(f"data:{medium}/"):].split(";", 1)[0]
        if not data_uri or declared not in rules.formats:
            raise invalid(param, f"must be a URL or asset of {', '.join(rules.formats)}")
        return 1
    parsed = urlparse(url)
    if not (parsed.scheme in ("http", "https") and parsed.netloc) and parsed.scheme != "asset":
        raise invalid(param, "must be an http(s) URL or an asset:// id")
    return 1


def _draft_source(sim: Simulator, target: Target, draft_id: str) -> VideoTask:
    from arksim.video import find_task

    draft = find_task(sim, draft_id)
    param = "content.draft_task.id"
    if draft.model_key != target.entry.key or not draft.spec.draft:
        raise invalid(param, f"{draft_id} is not a draft of model {target.model_id}")
    if draft.status != "succeeded":
        raise invalid(param, f"the draft task {draft_id} is {draft.status}, not succeeded")
    return draft


# --- `--flag` prompt suffixes ------------------------------------------------------------------------------------

def _prompt_flags(prompt: str, caps: VideoCapabilities) -> dict[str, Any]:
    """`--name value` suffix parameters that shape the result; weak validation: a bad value, or a parameter the
    model lacks, is ignored (docs/ark.md, "Videos"). The body field wins when both are given."""
    flags: dict[str, Any] = {}
    for raw_name, raw_value in FLAG.findall(prompt):
        name = FLAG_NAMES.get(raw_name.lower())
        if name is None:
            continue
        try:
            value = _flag_value(name, raw_value, caps)
        except ValueError:
            continue
        if value is not None:
            flags[name] = value
    return flags


def _flag_value(name: str, raw: str, caps: VideoCapabilities) -> Any:
    if name == "resolution":
        return raw if raw in caps.resolutions else None
    if name == "ratio":
        return raw if raw in caps.ratios else None
    number = int(raw)
    if name == "duration":
        return number if number in caps.duration else None
    if name == "frames":
        return number if caps.frames and is_valid_frames(number) else None
    return number if caps.seed and number in SEED else None
