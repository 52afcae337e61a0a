"""`POST /api/v3/images/generations` for Seedream 4.x (docs/ark.md, "Images")."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from arksim.errors import SimError, error_item, invalid
from arksim.fields import optional_bool, optional_enum, optional_int, optional_object, required_str
from arksim.inputs import inspect_image
from chalicelib.ark import limits
from chalicelib.ark.model_ids import IMAGE_MODELS_WITH_1K

if TYPE_CHECKING:
    from arksim.simulator import Simulator

# The model picks the aspect for a preset from the prompt; the simulator always answers square.
PRESET_SIZES = {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)}


@dataclass(frozen=True)
class ImageRequest:
    model: str
    prompt: str
    width: int
    height: int
    count: int
    response_format: str
    stream: bool


@dataclass(frozen=True)
class ImageOutcome:
    """One entry of `data[]`: an image, or an error in its place."""

    item: dict[str, Any]
    generated: bool
    internal_error: bool = False


def parse_request(sim: Simulator, body: dict[str, Any]) -> ImageRequest:
    model = sim.resolve_model(body.get("model"), "images")
    prompt = required_str(body, "prompt")
    references = _reference_images(sim, body)
    width, height = _size(body.get("size"), model)
    mode = optional_enum(body, "sequential_image_generation", limits.IMAGE_SEQUENTIAL_MODES) or "disabled"
    options = optional_object(body, "sequential_image_generation_options")
    max_images = optional_int(options, "max_images", 1, limits.IMAGE_MAX_IMAGES) or limits.IMAGE_MAX_IMAGES
    response_format = optional_enum(body, "response_format", limits.IMAGE_RESPONSE_FORMATS) or "url"
    prompt_options = optional_object(body, "optimize_prompt_options")
    # Seedream 4.5 supports only the `standard` prompt optimisation mode.
    optional_enum(prompt_options, "mode", ("standard",))
    optional_bool(body, "watermark")
    stream = bool(optional_bool(body, "stream"))
    if sim.config.input_sensitive_marker in prompt:
        raise SimError(400, "InputTextSensitiveContentDetected")
    count = 1
    if mode == "auto":
        count = min(max_images, limits.IMAGE_MAX_TOTAL_IMAGES - references)
    return ImageRequest(model, prompt, width, height, count, response_format, stream)


def _reference_images(sim: Simulator, body: dict[str, Any]) -> int:
    images = body.get("image")
    if images is None:
        return 0
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not 1 <= len(images) <= limits.IMAGE_MAX_REFERENCE_IMAGES:
        raise invalid("image", f"must be a URL or a list of 1 to {limits.IMAGE_MAX_REFERENCE_IMAGES} URLs")
    for image in images:
        found = inspect_image(image, "image", limits.IMAGE_INPUT_FORMATS, sim.media)
        if found.size_bytes is not None and found.size_bytes > sim.config.max_input_image_bytes:
            raise invalid("image", f"each image must be at most {sim.config.max_input_image_bytes} bytes")
        if found.width is None or found.height is None:
            continue
        if min(found.width, found.height) <= limits.IMAGE_INPUT_MIN_SIDE_EXCLUSIVE:
            raise invalid("image", f"each side must be greater than {limits.IMAGE_INPUT_MIN_SIDE_EXCLUSIVE} px")
        if found.width * found.height > limits.IMAGE_INPUT_MAX_PIXELS:
            raise invalid("image", f"an image may have at most {limits.IMAGE_INPUT_MAX_PIXELS} pixels")
        if not limits.IMAGE_MIN_ASPECT <= found.width / found.height <= limits.IMAGE_MAX_ASPECT:
            raise invalid("image", "the aspect ratio width/height must be within [1/16, 16]")
    return len(images)


def _size(value: Any, model: str) -> tuple[int, int]:
    if value is None:
        value = limits.IMAGE_DEFAULT_SIZE
    if not isinstance(value, str):
        raise invalid("size", "must be a string")
    presets = limits.IMAGE_SIZE_PRESETS_4_0 if model in IMAGE_MODELS_WITH_1K else limits.IMAGE_SIZE_PRESETS
    if value.upper() in presets:
        return PRESET_SIZES[value.upper()]
    parsed = limits.parse_pixel_size(value)
    if parsed is None:
        raise invalid("size", f"`{value}` must be one of {', '.join(presets)} or <width>x<height>")
    problem = limits.pixel_size_problem(*parsed)
    if problem:
        raise invalid("size", f"`{value}`: {problem}")
    return parsed


def check_rate_limits(sim: Simulator, request: ImageRequest) -> None:
    """Images per minute per account and model; group requests count every image they may produce."""
    if not sim.image_window.try_take(request.model, request.count, sim.config.images_per_minute, sim.now()):
        raise SimError(429, "ModelAccountIpmRateLimitExceeded", headers=sim.retry_after_header())
    limit = sim.config.image_max_in_flight
    # The request being checked is already counted as in flight.
    if limit and sim.stats.in_flight[request.model] > limit:
        raise SimError(429, "InflightBatchsizeExceeded", headers=sim.retry_after_header())


async def _outcome(sim: Simulator, request: ImageRequest, index: int, base_url: str) -> ImageOutcome:
    config = sim.config
    if sim.draw() < config.image_internal_error_fraction:
        sim.stats.faults["image_internal_error"] += 1
        return ImageOutcome({"error": error_item("InternalServiceError")}, generated=False, internal_error=True)
    marked = index == 0 and config.output_sensitive_marker in request.prompt
    if marked or sim.draw() < config.output_sensitive_fraction:
        sim.stats.faults["output_sensitive"] += 1
        return ImageOutcome({"error": error_item("OutputImageSensitiveContentDetected")}, generated=False)
    media = sim.media.add("jpeg", request.width, request.height, sim.now())
    item: dict[str, Any] = {"size": f"{request.width}x{request.height}"}
    if request.response_format == "b64_json":
        item["b64_json"] = base64.b64encode(await run_in_threadpool(media.render)).decode()
    else:
        item["url"] = f"{base_url}/_sim/media/{media.filename}"
    sim.stats.images_generated[request.model] += 1
    return ImageOutcome(item, generated=True)


def _usage(request: ImageRequest, generated: int) -> dict[str, int]:
    tokens = generated * request.width * request.height // 256
    return {"generated_images": generated, "output_tokens": tokens, "total_tokens": tokens}


async def generate(sim: Simulator, request: ImageRequest, base_url: str) -> dict[str, Any]:
    """The non-stream answer; raises the top-level error when no image was produced."""
    await asyncio.sleep(sim.config.image_latency_s)
    outcomes: list[ImageOutcome] = []
    for index in range(request.count):
        outcome = await _outcome(sim, request, index, base_url)
        outcomes.append(outcome)
        if outcome.internal_error:
            break
    generated = sum(outcome.generated for outcome in outcomes)
    if not generated:
        first_error = outcomes[0].item["error"]
        raise SimError(500 if outcomes[-1].internal_error else 400, first_error["code"], first_error["message"])
    return {
        "model": request.model,
        "created": int(sim.now()),
        "data": [outcome.item for outcome in outcomes],
        "usage": _usage(request, generated),
    }


async def generate_stream(sim: Simulator, request: ImageRequest, base_url: str) -> AsyncIterator[str]:
    """Server-sent events: one per image as it is ready, then `completed` with usage, then `[DONE]`."""
    generated = 0
    for index in range(request.count):
        await asyncio.sleep(sim.config.image_latency_s / request.count)
        outcome = await _outcome(sim, request, index, base_url)
        generated += outcome.generated
        kind = "image_generation.partial_succeeded" if outcome.generated else "image_generation.partial_failed"
        yield _event(kind, {"model": request.model, "created": int(sim.now()), "image_index": index,
                            **outcome.item})
        if outcome.internal_error:
            break
    yield _event("image_generation.completed", {"model": request.model, "created": int(sim.now()),
                                                 "usage": _usage(request, generated)})
    yield "data: [DONE]\n\n"


def _event(kind: str, payload: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n"
