"""The simulator answers each model of the capability table as Ark documents it: per-model fields and sizes,
PNG output and web search, reference media, audio, draft → render, frames and tokens, and results that show the
request they answer."""

from __future__ import annotations

import io
from typing import Any

import av
import httpx
import pytest
from PIL import Image, ImageChops

from chalicelib.ark.capabilities import IMAGE_PRESET_SIZES

from .conftest import IMAGE_MODEL, VIDEO_MODEL, auth, data_uri

IMAGES = "/images/generations"
TASKS = "/contents/generations/tasks"
SEEDREAM_4_0 = "doubao-seedream-4-0-250828"
SEEDREAM_5_LITE = "doubao-seedream-5-0-260128"
SEEDANCE_1_5 = "doubao-seedance-1-5-pro-251215"
SEEDANCE_2_0 = "doubao-seedance-2-0-260128"
SEEDANCE_2_0_FAST = "doubao-seedance-2-0-fast-260128"


def image(ark, model: str = IMAGE_MODEL, prompt: str = "a cat", **fields: Any) -> httpx.Response:
    return httpx.post(f"{ark.base_url}{IMAGES}", json={"model": model, "prompt": prompt, **fields},
                      headers=auth(), timeout=30)


def create(ark, model: str, content: list[dict[str, Any]] | str = "a cat", **fields: Any) -> httpx.Response:
    items = [{"type": "text", "text": content}] if isinstance(content, str) else content
    return httpx.post(f"{ark.base_url}{TASKS}", json={"model": model, "content": items, **fields}, headers=auth())


def created(ark, model: str, content: list[dict[str, Any]] | str = "a cat", **fields: Any) -> str:
    response = create(ark, model, content, **fields)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def get(ark, task_id: str) -> dict[str, Any]:
    return httpx.get(f"{ark.base_url}{TASKS}/{task_id}", headers=auth()).json()


def finished(ark, task_id: str) -> dict[str, Any]:
    ark.advance(3600)
    task = get(ark, task_id)
    assert task["status"] == "succeeded", task
    return task


def refused(response: httpx.Response, code: str, param: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    return error["message"]


def reference(kind: str, url: str) -> dict[str, Any]:
    return {"type": f"{kind}_url", f"{kind}_url": {"url": url}, "role": f"reference_{kind}"}


def picture(url: str) -> Image.Image:
    response = httpx.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def clip(url: str) -> tuple[list[Image.Image], list[Any]]:
    """A video's frames (as images) and its audio streams."""
    with av.open(io.BytesIO(httpx.get(url).content)) as container:
        audio = [(stream.codec_context.name, stream.codec_context.channels) for stream in container.streams.audio]
        frames = [frame.to_image() for frame in container.decode(video=0)]
    return frames, audio


# --- images -------------------------------------------------------------------------------------------------------

def test_seedream_5_lite_answers_png_when_asked_and_jpeg_by_default(frozen_ark):
    asked = image(frozen_ark, SEEDREAM_5_LITE, output_format="png").json()["data"][0]
    assert asked["url"].endswith(".png")
    assert httpx.get(asked["url"]).headers["content-type"] == "image/png"
    assert picture(asked["url"]).format == "PNG"
    assert picture(image(frozen_ark, SEEDREAM_5_LITE).json()["data"][0]["url"]).format == "JPEG"
    refused(image(frozen_ark, SEEDREAM_5_LITE, output_format="webp"), "InvalidParameter", "output_format")


def test_fields_a_seedream_model_lacks_are_refused_by_name(frozen_ark):
    for field, value in (("output_format", "png"), ("tools", [{"type": "web_search"}]), ("guidance_scale", 5)):
        message = refused(image(frozen_ark, IMAGE_MODEL, **{field: value}), "InvalidParameter.UnsupportedParameter",
                          field)
        assert f"`{field}`" in message and IMAGE_MODEL in message


def test_web_search_is_echoed_with_its_tool_usage_on_5_lite(frozen_ark):
    body = image(frozen_ark, SEEDREAM_5_LITE, prompt="today's skyline", tools=[{"type": "web_search"}]).json()
    assert body["tools"] == [{"type": "web_search"}]
    assert body["usage"]["tool_usage"] == {"web_search": 1}
    assert "tool_usage" not in image(frozen_ark, SEEDREAM_5_LITE).json()["usage"]
    refused(image(frozen_ark, SEEDREAM_5_LITE, tools=[{"type": "code"}]), "InvalidParameter", "tools.type")


@pytest.mark.parametrize(("model", "preset", "valid"), [
    (SEEDREAM_4_0, "1K", True), (IMAGE_MODEL, "1K", False), (IMAGE_MODEL, "4K", True),
    (SEEDREAM_5_LITE, "3K", True), (IMAGE_MODEL, "3K", False),
])
def test_size_presets_are_per_model(frozen_ark, model, preset, valid):
    response = image(frozen_ark, model, size=preset)
    if valid:
        assert response.json()["data"][0]["size"] == "x".join(map(str, IMAGE_PRESET_SIZES[preset]["1:1"]))
    else:
        refused(response, "InvalidParameter", "size")


@pytest.mark.parametrize(("prompt", "preset", "size"), [
    ("a beach at dusk, 16:9", "2K", "2848x1600"),
    ("a poster in 9:16", "4K", "3040x5504"),
    ("a vertical banner", "2K", "1600x2848"),
    ("a panoramic skyline", "4K", "6240x2656"),
    ("a cat", "2K", "2048x2048"),  # no aspect asked for: square
])
def test_a_preset_takes_the_documented_size_of_the_aspect_the_prompt_asks_for(frozen_ark, prompt, preset, size):
    body = image(frozen_ark, prompt=prompt, size=preset).json()
    assert body["data"][0]["size"] == size
    width, height = map(int, size.split("x"))
    assert body["usage"]["output_tokens"] == width * height // 256
    assert picture(body["data"][0]["url"]).size == (width, height)


def test_images_show_their_request_and_differ_by_prompt_and_place_in_the_group(frozen_ark):
    group = image(frozen_ark, prompt="two views of a lighthouse", size="2560x1440",
                  sequential_image_generation="auto").json()["data"]
    first, second = (picture(item["url"]).convert("RGB") for item in group)
    other = picture(image(frozen_ark, prompt="a red fox in snow", size="2560x1440").json()["data"][0]["url"])
    assert first.getcolors(maxcolors=1000) is None  # a drawn picture, not one flat colour
    assert ImageChops.difference(first, second).getbbox() is not None
    assert ImageChops.difference(first, other.convert("RGB")).getbbox() is not None
    # The caption band at the bottom differs from the gradient above it (prompt, model, size, index written in).
    bottom = first.crop((0, 1300, 2560, 1440)).getextrema()
    assert max(high for _, high in bottom) == 255


def test_the_same_request_draws_the_same_picture(frozen_ark):
    urls = [image(frozen_ark, prompt="a red kite").json()["data"][0]["url"] for _ in range(2)]
    assert urls[0] != urls[1]
    assert httpx.get(urls[0]).content == httpx.get(urls[1]).content


# --- videos: sizes, frames, tokens and audio ---------------------------------------------------------------------

@pytest.mark.parametrize(("model", "resolution", "ratio", "size", "frames", "tokens"), [
    (VIDEO_MODEL, "1080p", "16:9", (1920, 1088), 120, 244_800),  # Ark's documented 1.0 example
    (SEEDANCE_1_5, "720p", "16:9", (1280, 720), 121, 108_900),  # Ark's documented 1.5 / 2.x example
    (SEEDANCE_2_0, "720p", "1:1", (960, 960), 121, 108_900),
    (SEEDANCE_1_5, "480p", "16:9", (864, 496), 121, 864 * 496 * 121 // 1024),
])
def test_sizes_frames_and_tokens_follow_each_models_documented_examples(frozen_ark, model, resolution, ratio, size,
                                                                       frames, tokens):
    task = finished(frozen_ark, created(frozen_ark, model, resolution=resolution, ratio=ratio, duration=5))
    assert (task["duration"], task["framespersecond"]) == (5, 24)
    assert task["usage"] == {"completion_tokens": tokens, "total_tokens": tokens}
    decoded, _ = clip(task["content"]["video_url"])
    assert (len(decoded), decoded[0].size) == (frames, size)


def test_generate_audio_puts_a_mono_track_in_the_mp4_and_is_on_by_default(frozen_ark):
    by_default = finished(frozen_ark, created(frozen_ark, SEEDANCE_1_5, resolution="480p"))
    assert by_default["generate_audio"] is True
    assert clip(by_default["content"]["video_url"])[1] == [("aac", 1)]
    silent = finished(frozen_ark, created(frozen_ark, SEEDANCE_1_5, resolution="480p", generate_audio=False))
    assert silent["generate_audio"] is False
    assert clip(silent["content"]["video_url"])[1] == []
    assert "generate_audio" not in finished(frozen_ark, created(frozen_ark, VIDEO_MODEL, resolution="480p"))


def test_video_frames_move_under_the_same_caption_and_the_last_frame_is_the_videos(frozen_ark):
    task = finished(frozen_ark, created(frozen_ark, SEEDANCE_1_5, "a paper boat on a river", resolution="480p",
                                        duration=4, return_last_frame=True))
    frames, _ = clip(task["content"]["video_url"])
    assert ImageChops.difference(frames[0], frames[-1]).getbbox() is not None
    width, height = frames[0].size
    band = (0, height - 20, width // 2, height - 5)  # inside the caption, away from the moving disc
    caption_change = ImageChops.difference(frames[0].crop(band).convert("L"), frames[-1].crop(band).convert("L"))
    assert max(caption_change.getextrema()) < max(ImageChops.difference(frames[0], frames[-1]).convert(
        "L").getextrema())
    last = picture(task["content"]["last_frame_url"]).convert("RGB")
    assert last.size == (width, height)
    closeness = ImageChops.difference(last, frames[-1].convert("RGB")).convert("L").getextrema()[1]
    assert closeness < 80  # the same drawing, through H.264


def test_auto_duration_answers_the_seconds_chosen(frozen_ark):
    task = finished(frozen_ark, created(frozen_ark, SEEDANCE_1_5, resolution="480p", duration=-1))
    assert task["duration"] == 5
    refused(create(frozen_ark, VIDEO_MODEL, duration=-1), "InvalidParameter", "duration")
    refused(create(frozen_ark, SEEDANCE_1_5, duration=3), "InvalidParameter", "duration")


def test_a_text_only_adaptive_video_takes_the_aspect_from_the_prompt(frozen_ark):
    assert get(frozen_ark, created(frozen_ark, SEEDANCE_1_5, "a tall tower, 9:16"))["ratio"] == "9:16"
    assert get(frozen_ark, created(frozen_ark, SEEDANCE_1_5, "a cat"))["ratio"] == "16:9"
    refused(create(frozen_ark, VIDEO_MODEL, ratio="adaptive"), "InvalidParameter", "ratio")


@pytest.mark.parametrize(("model", "field", "value", "code"), [
    (SEEDANCE_2_0, "frames", 29, "InvalidParameter.UnsupportedParameter"),
    (SEEDANCE_2_0, "seed", 1, "InvalidParameter.UnsupportedParameter"),
    (SEEDANCE_2_0, "camera_fixed", True, "InvalidParameter.UnsupportedParameter"),
    (SEEDANCE_2_0, "draft", True, "InvalidParameter.UnsupportedParameter"),
    (SEEDANCE_2_0, "service_tier", "flex", "InvalidParameter"),
    (SEEDANCE_2_0, "priority", 10, "InvalidParameter"),
    (SEEDANCE_2_0_FAST, "resolution", "1080p", "InvalidParameter"),
    (SEEDANCE_1_5, "priority", 1, "InvalidParameter.UnsupportedParameter"),
    (SEEDANCE_1_5, "frames", 29, "InvalidParameter.UnsupportedParameter"),
    (VIDEO_MODEL, "output_format", "mov", "InvalidParameter.UnsupportedParameter"),
])
def test_video_fields_are_checked_against_each_models_row(frozen_ark, model, field, value, code):
    refused(create(frozen_ark, model, **{field: value}), code, field)


def test_priority_is_accepted_and_echoed_where_supported(frozen_ark):
    assert get(frozen_ark, created(frozen_ark, SEEDANCE_2_0, priority=9))["priority"] == 9


# --- videos: reference media ---------------------------------------------------------------------------------------

def test_seedance_2_takes_reference_images_videos_and_audio(frozen_ark):
    portrait = reference("image", data_uri(720, 1280))
    content = [{"type": "text", "text": "the two of them dance"}, portrait, reference("image", data_uri(640, 640)),
               reference("video", "https://example.com/move.mp4"), reference("audio", "data:audio/wav;base64,UklGRg==")]
    task = finished(frozen_ark, created(frozen_ark, SEEDANCE_2_0, content))
    assert task["ratio"] == "9:16"  # adaptive: shaped by the first reference image
    assert task["generate_audio"] is True


def test_a_reference_image_may_name_an_asset_of_the_account(frozen_ark):
    content = [{"type": "text", "text": "she waves"}, reference("image", "asset://asset-portrait-1")]
    assert finished(frozen_ark, created(frozen_ark, SEEDANCE_2_0, content))["status"] == "succeeded"


@pytest.mark.parametrize(("model", "content", "fragment"), [
    (SEEDANCE_2_0, [reference("image", data_uri(640, 640))] * 10, "1 to 9 reference images"),
    (SEEDANCE_2_0, [reference("audio", "https://example.com/a.mp3")], "needs a reference image or video"),
    (SEEDANCE_2_0, [reference("video", "https://example.com/v.mp4")] * 4, "at most 3 reference videos"),
    (SEEDANCE_2_0, [{"type": "image_url", "image_url": {"url": data_uri(640, 640)}, "role": "first_frame"},
                    reference("image", data_uri(640, 640))], "cannot be mixed with reference media"),
    (SEEDANCE_2_0, [reference("video", "data:video/mp4;base64,AAAA")], "must be a URL"),
    (VIDEO_MODEL, [reference("image", data_uri(640, 640))], "reference media are not supported"),
])
def test_reference_media_rules_per_model(frozen_ark, model, content, fragment):
    response = create(frozen_ark, model, content)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


# --- videos: draft, then render ----------------------------------------------------------------------------------

def test_a_succeeded_1_5_pro_draft_is_rendered_in_full_by_a_task_that_names_it(frozen_ark):
    draft_id = created(frozen_ark, SEEDANCE_1_5, "a fox runs through snow", draft=True, ratio="4:3", duration=6,
                       seed=42, generate_audio=True)
    draft = finished(frozen_ark, draft_id)
    assert (draft["draft"], draft["resolution"], draft["ratio"], draft["seed"]) == (True, "480p", "4:3", 42)
    assert "draft_task_id" not in draft

    render_id = created(frozen_ark, SEEDANCE_1_5, [{"type": "draft_task", "draft_task": {"id": draft_id}}],
                        resolution="720p", return_last_frame=True)
    render = finished(frozen_ark, render_id)
    assert (render["draft"], render["draft_task_id"]) == (False, draft_id)
    # The draft's prompt, ratio, duration, seed and audio are reused; the resolution is the render's own.
    assert (render["resolution"], render["ratio"], render["duration"], render["seed"]) == ("720p", "4:3", 6, 42)
    assert render["generate_audio"] is True
    assert render["usage"]["completion_tokens"] == 1112 * 834 * 145 // 1024
    assert "last_frame_url" in render["content"]


def test_draft_rules(frozen_ark):
    refused(create(frozen_ark, SEEDANCE_1_5, draft=True, resolution="720p"), "InvalidParameter", "resolution")
    refused(create(frozen_ark, SEEDANCE_1_5, draft=True, return_last_frame=True), "InvalidParameter",
            "return_last_frame")
    refused(create(frozen_ark, SEEDANCE_1_5, draft=True, service_tier="flex"), "InvalidParameter", "service_tier")
    queued_draft = created(frozen_ark, SEEDANCE_1_5, draft=True)
    not_a_draft = created(frozen_ark, SEEDANCE_1_5)
    render = [{"type": "draft_task", "draft_task": {"id": queued_draft}}]
    assert "is queued, not succeeded" in refused(create(frozen_ark, SEEDANCE_1_5, render), "InvalidParameter",
                                                 "content.draft_task.id")
    render = [{"type": "draft_task", "draft_task": {"id": not_a_draft}}]
    refused(create(frozen_ark, SEEDANCE_1_5, render), "InvalidParameter", "content.draft_task.id")
    succeeded_draft = created(frozen_ark, SEEDANCE_1_5, draft=True)
    finished(frozen_ark, succeeded_draft)
    render = [{"type": "draft_task", "draft_task": {"id": succeeded_draft}}]
    for reused in ({"seed": 3}, {"ratio": "1:1"}, {"duration": 8}, {"generate_audio": False}):
        refused(create(frozen_ark, SEEDANCE_1_5, render, **reused), "InvalidParameter", *reused)
    unknown = [{"type": "draft_task", "draft_task": {"id": "cgt-20990101000000-zzzzz"}}]
    assert create(frozen_ark, SEEDANCE_1_5, unknown).json()["error"]["code"] == "NotFound.TaskId"
    with_text = [{"type": "text", "text": "a cat"}, {"type": "draft_task", "draft_task": {"id": queued_draft}}]
    refused(create(frozen_ark, SEEDANCE_1_5, with_text), "InvalidParameter", "content")
    refused(create(frozen_ark, SEEDANCE_2_0, [{"type": "draft_task", "draft_task": {"id": queued_draft}}]),
            "InvalidParameter", "content.type")


# --- models and providers ----------------------------------------------------------------------------------------

def test_the_simulated_provider_decides_the_ids_and_what_is_retired(frozen_ark):
    lite = "doubao-seedance-1-0-lite-t2v-250428"
    assert create(frozen_ark, lite, resolution="480p").status_code == 200  # deprecated in China, still answering
    frozen_ark.configure(provider="byteplus")
    for retired_or_foreign in ("seedance-1-0-lite-t2v-250428", VIDEO_MODEL):
        response = create(frozen_ark, retired_or_foreign)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "InvalidEndpointOrModel.NotFound")
    assert create(frozen_ark, "dreamina-seedance-2-0-260128").status_code == 200
    assert image(frozen_ark, "seedream-5-0-lite-260128").json()["model"] == "seedream-5-0-lite-260128"
