"""A task's request judged against its model's capabilities (`chalicelib.ark.capabilities`): every field the model
refuses is named, with why, and a field the model lacks is named as unsupported (never dropped).

The checks read a request's shape (how many frames and references of which kind, which fields with which values),
so a new request, a model's defaults and a queued task re-validated against a new upstream are judged alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.ark import capabilities as table
from chalicelib.ark.capabilities import ArkModel, ImageCapabilities, VideoCapabilities


@dataclass(frozen=True)
class Problem:
    field: str
    type: str
    message: str

    def detail(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "type": self.type}


def _unsupported(name: str, model: ArkModel) -> Problem:
    return Problem(name, "unsupported", f"is not supported by {model.display_name}")


def _one_of(values: Sequence[Any]) -> str:
    return ", ".join(str(value) for value in values)


# --- images ----------------------------------------------------------------------------------------------------


def image_problems(model: ArkModel, *, references: int, fields: Mapping[str, Any], prefix: str = "",
                   ) -> list[Problem]:
    """`fields`: the image fields given (`size`, `max_images`, `watermark`, `output_format`, `tools`), None for
    those left out."""
    image = model.image
    assert image is not None
    problems: list[Problem] = []
    if references > image.max_references:
        problems.append(Problem("images", "too_many_images",
                                f"{model.display_name} takes at most {image.max_references} reference images"))
    size = fields.get("size")
    if size is not None and (problem := _size_problem(image, model, size)):
        problems.append(Problem(prefix + "size", "image_size", problem))
    max_images = fields.get("max_images")
    if max_images is not None:
        if image.max_images is None:
            problems.append(_unsupported(prefix + "max_images", model))
        elif max_images not in table.Range(1, image.max_images):
            problems.append(Problem(prefix + "max_images", "max_images", f"must be 1-{image.max_images}"))
        elif references + max_images > image.max_total_images:
            problems.append(Problem(prefix + "max_images", "too_many_images",
                                    f"reference images plus max_images must be at most {image.max_total_images}"))
    output_format = fields.get("output_format")
    if output_format is not None:
        if not image.output_formats:
            problems.append(_unsupported(prefix + "output_format", model))
        elif output_format not in image.output_formats:
            problems.append(Problem(prefix + "output_format", "output_format",
                                    f"must be one of {_one_of(image.output_formats)}"))
    tools = fields.get("tools")
    if tools is not None:
        if not image.web_search:
            problems.append(_unsupported(prefix + "tools", model))
        else:
            problems += [Problem(f"{prefix}tools[{index}].type", "tool_type",
                                 f"must be one of {_one_of(image.tool_types)}")
                         for index, tool in enumerate(tools) if tool not in image.tool_types]
    return problems


def _size_problem(image: ImageCapabilities, model: ArkModel, size: str) -> str | None:
    dimensions = table.parse_pixel_size(size)
    if dimensions is None:
        if size.upper() in image.size_presets:
            return None
        return (f"{model.display_name} takes the presets {' or '.join(image.size_presets)}, or WxH such as "
                f"{image.default_size}")
    return table.pixel_size_problem(image, *dimensions)


# --- videos ----------------------------------------------------------------------------------------------------


def video_problems(model: ArkModel, *, prompt: bool, frames: int, references: Sequence[str],
                   params: Mapping[str, Any], prefix: str = "params.", inputs: bool = True) -> list[Problem]:
    """`frames`: how many first/last-frame images; `references`: the kind of each reference (`image`, `video`,
    `audio`); `params`: the fields given (None for those left out); `inputs`: whether to judge the input mode
    too (not for a model's defaults, which have none)."""
    video = model.video
    assert video is not None
    problems = _input_mode_problems(model, video, prompt=prompt, frames=frames, references=references) \
        if inputs else []
    given = {name: value for name, value in params.items() if value is not None}

    def bad(name: str, kind: str, message: str) -> None:
        problems.append(Problem(prefix + name, kind, message))

    def lacks(name: str) -> None:
        problems.append(_unsupported(prefix + name, model))

    resolution = given.get("resolution")
    if resolution is not None:
        if resolution not in video.resolutions:
            bad("resolution", "resolution", f"must be one of {_one_of(video.resolutions)} on {model.display_name}")
        elif references and video.references and resolution in video.references.resolutions_excluded:
            bad("resolution", "resolution", f"{resolution} is not available with reference media")
    ratio = given.get("ratio")
    if ratio is not None:
        if ratio not in video.ratios:
            bad("ratio", "ratio", f"must be one of {_one_of(video.ratios)}")
        elif ratio == table.ADAPTIVE and not frames and not references and not video.adaptive_without_image:
            bad("ratio", "ratio_adaptive", "adaptive needs a first-frame image")
        elif ratio != table.ADAPTIVE and frames and video.frames_only_adaptive:
            bad("ratio", "ratio_adaptive", f"{model.display_name} takes only adaptive with first/last frames")
    duration = given.get("duration")
    if duration is not None:
        auto = video.auto_duration and duration == table.AUTO_DURATION
        if not auto and duration not in video.duration:
            bad("duration", "duration", f"must be {video.duration.text()} s" + (" or -1 (auto)"
                                                                                 if video.auto_duration else ""))
    frame_count = given.get("frames")
    if frame_count is not None:
        if not video.frames:
            lacks("frames")
        elif not table.is_valid_frames(frame_count):
            bad("frames", "frames", f"must be 25 + 4n within [{table.FRAMES.minimum}, {table.FRAMES.maximum}]")
        elif duration is not None:
            bad("frames", "duration_and_frames", "give duration or frames, not both")
    seed = given.get("seed")
    if seed is not None:
        if not video.seed:
            lacks("seed")
        elif seed not in table.SEED:
            bad("seed", "seed", f"must be {table.SEED.minimum} (random) to {table.SEED.maximum}")
    if given.get("camera_fixed") is not None:
        if not video.camera_fixed:
            lacks("camera_fixed")
        elif references and video.references and not video.references.camera_fixed:
            bad("camera_fixed", "camera_fixed", "is not available with reference media")
    if given.get("generate_audio") is not None and not video.generate_audio:
        lacks("generate_audio")
    tier = given.get("service_tier")
    if tier is not None and tier not in video.service_tiers:
        if tier in table.SERVICE_TIERS:
            bad("service_tier", "unsupported", f"{tier} is not offered by {model.display_name}")
        else:
            bad("service_tier", "service_tier", f"must be one of {_one_of(video.service_tiers)}")
    draft = given.get("draft")
    if draft is not None:
        if not video.draft:
            lacks("draft")
        elif draft:
            if resolution is not None and resolution != table.DRAFT_RESOLUTION:
                bad("resolution", "draft", f"a draft is made at {table.DRAFT_RESOLUTION} only")
            if given.get("return_last_frame"):
                bad("return_last_frame", "draft", "a draft has no last frame")
            if tier == "flex":
                bad("service_tier", "draft", "a draft cannot use flex")
    priority = given.get("priority")
    if priority is not None:
        if not video.priority:
            lacks("priority")
        elif priority not in table.PRIORITY:
            bad("priority", "priority", f"must be {table.PRIORITY.text()}")
        elif tier == "flex":
            bad("priority", "priority", "priority does not apply to flex")
    expires = given.get("execution_expires_after")
    if expires is not None and expires not in table.EXPIRES_AFTER:
        bad("execution_expires_after", "execution_expires_after", f"must be {table.EXPIRES_AFTER.text()} s")
    output_format = given.get("output_format")
    if output_format is not None:
        if not video.output_formats:
            lacks("output_format")
        elif output_format not in video.output_formats:
            bad("output_format", "output_format", f"must be one of {_one_of(video.output_formats)}")
    return problems


def _input_mode_problems(model: ArkModel, video: VideoCapabilities, *, prompt: bool, frames: int,
                         references: Sequence[str]) -> list[Problem]:
    name = model.display_name
    if frames and references:
        return [Problem("references", "mixed_inputs", "reference media cannot be mixed with first/last frames "
                                                       "(images)")]
    if references:
        return _reference_problems(model, references)
    if frames == 1 and not video.first_frame:
        return [Problem("images", "unsupported", f"{name} takes no first-frame image")]
    if frames == 2 and not video.first_last_frame:
        return [Problem("images[1]", "unsupported", f"{name} has no last-frame mode")]
    if not frames and not video.text:
        return [Problem("images", "image_required", f"{name} needs a first-frame image or reference images")]
    if not frames and not prompt:
        return [Problem("prompt", "prompt_or_image", "a video needs a prompt, a first-frame image or both")]
    return []


def _reference_problems(model: ArkModel, references: Sequence[str]) -> list[Problem]:
    rules = model.video.references if model.video else None
    if rules is None:
        return [_unsupported("references", model)]
    counts = {kind: sum(1 for ref in references if ref == kind) for kind in ("image", "video", "audio")}
    problems = []
    limits = {"image": rules.images.maximum, "video": rules.videos, "audio": rules.audios}
    for kind, limit in limits.items():
        if counts[kind] > limit:
            message = (f"{model.display_name} takes no reference {kind}" if not limit
                       else f"{model.display_name} takes at most {limit} reference {kind}s")
            problems.append(Problem("references", "unsupported" if not limit else "too_many_references", message))
    if problems:
        return problems
    if counts["audio"] and not counts["image"] and not counts["video"] and not rules.audio_alone:
        return [Problem("references", "audio_alone", "reference audio needs a reference image or video with it")]
    if not counts["video"] and not (counts["audio"] and rules.audio_alone) and counts["image"] < rules.images.minimum:
        return [Problem("references", "too_few_references",
                        f"{model.display_name} needs at least {rules.images.minimum} reference image")]
    return []
