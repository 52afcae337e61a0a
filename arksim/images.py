"""`POST /api/v3/images/generations` for the Seedream models of the capability table (docs/ark.md, "Images")."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from arksim.errors import OUTPUT_IMAGE_MODERATION_CODES, SimError, error_item, invalid
from arksim.fields import optional_bool, optional_enum, optional_int, optional_object, required_str
from arksim.inputs import inspect_image
from arksim.media import Look
from arksim.prompts import requested_aspect, requested_count
from chalicelib.ark.capabilities import IMAGE_PRESET_SIZES, ImageCapabilities, parse_pixel_size, pixel_size_problem

if TYPE_CHECKING:
    from arksim.simulator import Simulator, Target

# Fields of the image API that only some models accept (the rest are accepted by all).
GROUP_FIELDS = ("sequential_image_generation", "sequential_image_generation_options")
# Documented as unsupported by every Seedream 4.x/5.x model (seed: 3.0 and SeedEdit only).
NEVER_SUPPORTED = ("guidance_scale", "seed")


@dataclass(frozen=True)
class ImageRequest:
    model: str
    prompt: str
    width: int
    height: int
    count: int
    response_format: str
    stream: bool
    output_format: str = "jpeg"
    web_searches: int | None = None  # `tools: [web_search]`: searches made (None: no tools sent)
    images_per_minute: int = 500


@dataclass(frozen=True)
class ImageOutcome:
    """One entry of `data[]`: an image, or an error in its place."""

    item: dict[str, Any]
    generated: bool
    internal_error: bool = False


def unsupported_fields(image: ImageCapabilities) -> tuple[str, ...]:
    """The image API's fields this model does not accept, as its row of the capability table says."""
    fields = list(NEVER_SUPPORTED)
    if not image.output_formats:
        fields.append("output_format")
    if not image.web_search:
        fields.append("tools")
    if image.max_images is None:
        fields.extend(GROUP_FIELDS)
    if not image.stream:
        fields.append("stream")
    return tuple(fields)


def parse_request(sim: Simulator, body: dict[str, Any]) -> ImageRequest:
    target = sim.resolve_model(body.get("model"), "image")
    caps = target.image
    prompt = required_str(body, "prompt")
    sim.refuse_unsupported(target, body, unsupported_fields(caps))
    references = _reference_images(sim, body, caps)
    width, height = _size(body.get("size"), caps, prompt)
    count = 1
    if caps.max_images is not None:
        mode = optional_enum(body, "sequential_image_generation", caps.sequential_modes) or "disabled"
        options = optional_object(body, "sequential_image_generation_options")
        max_images = optional_int(options, "max_images", 1, caps.max_images) or caps.max_images
        if mode == "auto":
            # The model makes what the prompt asks for, within max_images and the total with the references.
            count = max(1, min(requested_count(prompt), max_images, caps.max_total_images - references))
    response_format = optional_enum(body, "response_format", caps.response_formats) or "url"
    output_format = "jpeg"
    if caps.output_formats:
        output_format = optional_enum(body, "output_format", caps.output_formats) or caps.default_output_format
    prompt_options = optional_object(body, "optimize_prompt_options")
    optional_enum(prompt_options, "mode", caps.prompt_modes)
    optional_bool(body, "watermark")
    stream = bool(optional_bool(body, "stream")) if caps.stream else False
    web_searches = _web_searches(body, caps) if caps.web_search else None
    sim.check_input_moderation(prompt)
    return ImageRequest(target.model_id, prompt, width, height, count, response_format, stream, output_format,
                        web_searches, _images_per_minute(sim, target))


def _images_per_minute(sim: Simulator, target: Target) -> int:
    return sim.config.images_per_minute or target.image.images_per_minute


def _web_searches(body: dict[str, Any], caps: ImageCapabilities) -> int | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise invalid("tools", "must be a list of objects")
    for tool in tools:
        if tool.get("type") not in caps.tool_types:
            raise invalid("tools.type", f"must be one of {', '.join(caps.tool_types)}")
    return 1 if tools else 0  # one search per request that offers the tool


def _reference_images(sim: Simulator, body: dict[str, Any], caps: ImageCapabilities) -> int:
    images = body.get("image")
    if images is None:
        return 0
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not 1 <= len(images) <= caps.max_references:
        raise invalid("image", f"must be a URL or a list of 1 to {caps.max_references} URLs")
    rules = caps.inputs
    max_bytes = sim.config.max_input_image_bytes or rules.max_bytes
    for image in images:
        found = inspect_image(image, "image", rules.formats, sim.media)
        if found.size_bytes is not None and found.size_bytes > max_bytes:
            raise invalid("image", f"each image must be at most {max_bytes} bytes")
        if found.width is None or found.height is None:
            continue
        if min(found.width, found.height) <= rules.min_side:
            raise invalid("image", f"each side must be greater than {rules.min_side} px")
        if rules.max_pixels is not None and found.width * found.height > rules.max_pixels:
            raise invalid("image", f"an image may have at most {rules.max_pixels} pixels")
        if not rules.aspect[0] <= found.width / found.height <= rules.aspect[1]:
            raise invalid("image", "the aspect ratio width/height must be within [1/16, 16]")
    return len(images)


def _size(value: Any, caps: ImageCapabilities, prompt: str) -> tuple[int, int]:
    if value is None:
        value = caps.default_size
    if not isinstance(value, str):
        raise invalid("size", "must be a string")
    preset = value.upper()
    if preset in caps.size_presets:
        # Ark's model picks the shape from the prompt: the documented size for the aspect it asks for.
        sizes = IMAGE_PRESET_SIZES[preset]
        return sizes.get(requested_aspect(prompt) or "1:1", sizes["1:1"])
    parsed = parse_pixel_size(value)
    if parsed is None:
        raise invalid("size", f"`{value}` must be one of {', '.join(caps.size_presets)} or <width>x<height>")
    problem = pixel_size_problem(caps, *parsed)
    if problem:
        raise invalid("size", f"`{value}`: {problem}")
    return parsed


def check_rate_limits(sim: Simulator, request: ImageRequest) -> None:
    """Images per minute per account and model; group requests count every image they may produce."""
    if not sim.image_window.try_take(request.model, request.count, request.images_per_minute, sim.now()):
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
    asked = sim.moderation_asked(request.prompt)
    code = asked if index == 0 and asked in OUTPUT_IMAGE_MODERATION_CODES else None
    if code is None and index == 0 and config.output_sensitive_marker in request.prompt:
        code = "OutputImageSensitiveContentDetected"
    if code is not None or sim.draw() < config.output_sensitive_fraction:
        sim.stats.faults["output_sensitive"] += 1
        return ImageOutcome({"error": error_item(code or "OutputImageSensitiveContentDetected")}, generated=False)
    look = Look(request.prompt, request.model, index, request.count)
    media = sim.media.add(request.output_format, request.width, request.height, sim.now(), look=look)
    item: dict[str, Any] = {"size": f"{request.width}x{request.height}"}
    if request.response_format == "b64_json":
        item["b64_json"] = base64.b64encode(await run_in_threadpool(media.render)).decode()
    else:
        item["url"] = f"{base_url}/_sim/media/{media.filename}"
    sim.stats.images_generated[request.model] += 1
    return ImageOutcome(item, generated=True)


def _usage(request: ImageRequest, generated: int) -> dict[str, Any]:
    tokens = generated * request.width * request.height // 256
    usage: dict[str, Any] = {"generated_images": generated, "output_tokens": tokens, "total_tokens": tokens}
    if request.web_searches is not None:
        usage["tool_usage"] = {"web_search": request.web_searches}
    return usage


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
    answer: dict[str, Any] = {
        "model": request.model,
        "created": int(sim.now()),
        "data": [outcome.item for outcome in outcomes],
        "usage": _usage(request, generated),
    }
    if request.web_searches is not None:
        answer["tools"] = [{"type": "web_search"}]
    return answer


async def generate_stream(sim: Simulator, request: ImageRequest, base_url: str,
                          request_id: str) -> AsyncIterator[str]:
    """Server-sent events: one per image as it is ready, then `completed` with usage, then `[DONE]`; or, when a
    stream error is injected, a request-level `error` event after the first image, which ends the stream."""
    generated = 0
    breaks_off = sim.draw() < sim.config.stream_error_fraction
    for index in range(request.count):
        if breaks_off and index == 1:
            break
        await asyncio.sleep(sim.config.image_latency_s / request.count)
        outcome = await _outcome(sim, request, index, base_url)
        generated += outcome.generated
        kind = "image_generation.partial_succeeded" if outcome.generated else "image_generation.partial_failed"
        yield _event(kind, {"model": request.model, "created": int(sim.now()), "image_index": index,
                            **outcome.item})
        if outcome.internal_error:
            break
    if breaks_off:
        sim.stats.faults["stream_error"] += 1
        yield _event("error", SimError(500, "InternalServiceError").body(request_id))
        return
    yield _event("image_generation.completed", {"model": request.model, "created": int(sim.now()),
                                                 "usage": _usage(request, generated)})
    yield "data: [DONE]\n\n"


def _event(kind: str, payload: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n"
