"""The simulator's request validation: one case per limit in docs/ark.md (images, videos, errors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from arksim.server import RunningSimulator
from arksim.testing import running_simulator
from chalicelib.ark.capabilities import SEED

from .conftest import FAST, IMAGE_MODEL, VIDEO_MODEL, auth, data_uri

PNG_20 = data_uri(20, 20)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    """Validation is stateless, so one simulator serves the module (limits raised out of the way)."""
    with running_simulator(**FAST, images_per_minute=100_000, video_requests_per_minute=100_000,
                           video_max_queued=100_000, endpoints={"ep-20250101000000-abcde": VIDEO_MODEL},
                           inactive_models=["doubao-seedance-1-0-pro-fast-251015"]) as running:
        yield running


def post(sim: RunningSimulator, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{sim.base_url}{path}", json=body, headers=auth(), timeout=30, **kwargs)


def image(sim: RunningSimulator, **fields: Any) -> httpx.Response:
    return post(sim, "/images/generations", {"model": IMAGE_MODEL, "prompt": "a cat", **fields})


def video(sim: RunningSimulator, content: list[dict[str, Any]] | None = None, **fields: Any) -> httpx.Response:
    content = content if content is not None else [{"type": "text", "text": "a cat"}]
    return post(sim, "/contents/generations/tasks", {"model": VIDEO_MODEL, "content": content, **fields})


def frame(uri: str, role: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "image_url", "image_url": {"url": uri}}
    if role:
        item["role"] = role
    return item


def assert_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].endswith(f"Request ID: {response.headers['X-Client-Request-Id']}")
    if param is not None:
        assert error["param"] == param


def assert_ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


# --- common ---------------------------------------------------------------------------------------------------

def test_missing_or_malformed_authorization_is_401(sim):
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}):
        response = httpx.post(f"{sim.base_url}/images/generations", json={}, headers=headers)
        assert_error(response, 401, "AuthenticationError")
        assert response.json()["error"]["type"] == "Unauthorized"


def test_client_request_id_is_echoed_and_ends_error_messages(sim):
    response = httpx.post(f"{sim.base_url}/images/generations", json={"model": IMAGE_MODEL},
                          headers={**auth(), "X-Client-Request-Id": "req-42"})
    assert response.headers["X-Client-Request-Id"] == "req-42"
    assert response.json()["error"]["message"].endswith("Request ID: req-42")


def test_unknown_model_inactive_model_and_endpoint_ids(sim):
    assert_error(image(sim, model="doubao-nope-1"), 404, "InvalidEndpointOrModel.NotFound", "model")
    assert_error(video(sim, model="ep-20990101000000-zzzzz"), 404, "InvalidEndpointOrModel.NotFound")
    assert_error(video(sim, model="doubao-seedance-1-0-pro-fast-251015"), 404, "ModelNotOpen")
    created = assert_ok(video(sim, model="ep-20250101000000-abcde"))
    task = httpx.get(f"{sim.base_url}/contents/generations/tasks/{created['id']}", headers=auth()).json()
    assert task["model"] == VIDEO_MODEL


def test_body_must_be_a_json_object(sim):
    response = httpx.post(f"{sim.base_url}/images/generations", content=b"[1]", headers=auth())
    assert_error(response, 400, "InvalidParameter")


# --- images -----------------------------------------------------------------------------------------------------

def test_prompt_is_required(sim):
    assert_error(image(sim, prompt=None), 400, "MissingParameter", "prompt")


def test_at_most_14_reference_images(sim):
    assert len(assert_ok(image(sim, image=[PNG_20] * 14))["data"]) == 1
    assert_error(image(sim, image=[PNG_20] * 15), 400, "InvalidParameter", "image")


def test_data_uri_format_must_be_lower_case_and_supported(sim):
    assert_ok(image(sim, image=data_uri(20, 20, "jpeg")))
    assert_error(image(sim, image=PNG_20.replace("image/png", "image/PNG")), 400, "InvalidImageURL.InvalidFormat")
    assert_error(image(sim, image="data:image/svg;base64,PHN2Zz4="), 400, "InvalidImageURL.InvalidFormat")


def test_undecodable_and_empty_images(sim):
    assert_error(image(sim, image="data:image/png;base64,bm90IGFuIGltYWdl"), 400, "InvalidImageURL.InvalidFormat")
    assert_error(image(sim, image=""), 400, "InvalidImageURL.EmptyURL")
    assert_error(image(sim, image="ftp://example.com/a.png"), 400, "InvalidImageURL.InvalidFormat")


def test_reference_image_sides_must_exceed_14_px(sim):
    assert_ok(image(sim, image=data_uri(15, 15)))
    assert_error(image(sim, image=data_uri(14, 20)), 400, "InvalidParameter", "image")


def test_reference_image_at_most_36_megapixels(sim):
    assert_ok(image(sim, image=data_uri(6000, 6000, mode="1")))
    assert_error(image(sim, image=data_uri(6001, 6000, mode="1")), 400, "InvalidParameter", "image")


def test_reference_image_aspect_within_1_16_and_16(sim):
    assert_ok(image(sim, image=data_uri(16 * 20, 20)))
    assert_error(image(sim, image=data_uri(17 * 20, 20)), 400, "InvalidParameter", "image")


def test_reference_image_byte_limit_is_switchable(sim):
    big = data_uri(300, 300, "bmp")
    assert_ok(image(sim, image=big))
    sim.configure(max_input_image_bytes=1000)
    try:
        assert_error(image(sim, image=big), 400, "InvalidParameter", "image")
    finally:
        sim.configure(max_input_image_bytes=10 * 1024 * 1024)


def test_size_presets_2k_and_4k_in_any_case_but_not_1k_on_4_5(sim):
    assert assert_ok(image(sim, size="2k"))["data"][0]["size"] == "2048x2048"
    assert assert_ok(image(sim, size="4K"))["data"][0]["size"] == "4096x4096"
    response = image(sim, size="1K")
    assert_error(response, 400, "InvalidParameter", "size")
    assert "`size`" in response.json()["error"]["message"]
    assert assert_ok(image(sim, size="1K", model="doubao-seedream-4-0-250828"))["data"][0]["size"] == "1024x1024"


def test_default_size_is_2048_square(sim):
    body = assert_ok(image(sim))
    assert body["data"][0]["size"] == "2048x2048"
    assert body["usage"] == {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}


@pytest.mark.parametrize(("size", "valid"), [
    ("2560x1440", True),  # the minimum pixel count
    ("4096x4096", True),  # the maximum pixel count
    ("3750x1250", True),  # the limit is on the product, not each side
    ("1500x1500", False),  # too few pixels
    ("4096x4097", False),  # too many pixels
    ("8000x480", False),  # aspect above 16 (pixels in range)
    ("480x8000", False),  # aspect below 1/16
    ("2048*2048", False),  # not WxH
])
def test_pixel_sizes_obey_the_pixel_and_aspect_limits(sim, size, valid):
    response = image(sim, size=size)
    if valid:
        assert assert_ok(response)["data"][0]["size"] == size
    else:
        assert_error(response, 400, "InvalidParameter", "size")


def test_enums_for_sequential_mode_response_format_and_prompt_mode(sim):
    assert_error(image(sim, sequential_image_generation="always"), 400, "InvalidParameter",
                 "sequential_image_generation")
    assert_error(image(sim, response_format="png"), 400, "InvalidParameter", "response_format")
    assert_error(image(sim, optimize_prompt_options={"mode": "fast"}), 400, "InvalidParameter", "mode")
    assert_ok(image(sim, optimize_prompt_options={"mode": "standard"}, watermark=True))


def test_max_images_within_1_and_15(sim):
    for bad in (0, 16):
        assert_error(image(sim, sequential_image_generation="auto",
                           sequential_image_generation_options={"max_images": bad}), 400, "InvalidParameter",
                     "max_images")


@pytest.mark.parametrize(("prompt", "fields", "count"), [
    ("a set of 4 cats", {"sequential_image_generation_options": {"max_images": 6}}, 4),
    ("six views of a cat", {"sequential_image_generation_options": {"max_images": 4}}, 4),  # capped by max_images
    ("a cat", {"sequential_image_generation_options": {"max_images": 4}}, 1),  # asks for no count: not the maximum
    ("生成3张猫的图片", {}, 3),
    ("fifteen images of a cat", {"image": [PNG_20] * 13}, 2),  # references + generated <= 15
    ("4 images of a cat", {"sequential_image_generation": "disabled"}, 1),
])
def test_a_group_makes_what_the_prompt_asks_for_within_max_images_and_the_15_image_total(sim, prompt, fields,
                                                                                        count):
    body = assert_ok(image(sim, prompt=prompt, **{"sequential_image_generation": "auto", **fields}))
    assert len(body["data"]) == count
    assert body["usage"]["generated_images"] == count


def test_null_fields_count_as_absent(sim):
    assert_ok(image(sim, image=None, size=None, seed=None, watermark=None, stream=None))


# --- video -----------------------------------------------------------------------------------------------------------

def test_content_is_required(sim):
    assert_error(video(sim, content=[]), 400, "MissingParameter", "content")


def test_reference_images_and_other_content_types_are_not_for_1_0_pro(sim):
    assert_error(video(sim, content=[frame(data_uri(640, 360), "reference_image")]), 400, "InvalidParameter")
    assert_error(video(sim, content=[{"type": "video_url", "video_url": {"url": "http://a/b.mp4"}}]), 400,
                 "InvalidParameter")


def test_first_and_last_frames_need_both_roles(sim):
    first, last = frame(data_uri(640, 360), "first_frame"), frame(data_uri(640, 360), "last_frame")
    assert_ok(video(sim, content=[last, first]))
    assert_error(video(sim, content=[frame(data_uri(640, 360)), frame(data_uri(640, 360))]), 400,
                 "InvalidParameter")
    assert_error(video(sim, content=[last]), 400, "InvalidParameter")
    assert_error(video(sim, content=[first, last, frame(data_uri(640, 360), "last_frame")]), 400,
                 "InvalidParameter")


def test_video_image_sides_strictly_between_300_and_6000(sim):
    assert_ok(video(sim, content=[frame(data_uri(301, 301))]))
    assert_error(video(sim, content=[frame(data_uri(300, 400))]), 400, "InvalidParameter")
    assert_error(video(sim, content=[frame(data_uri(6000, 5000, mode="1"))]), 400, "InvalidParameter")


def test_video_image_aspect_strictly_between_0_4_and_2_5(sim):
    assert_ok(video(sim, content=[frame(data_uri(999, 400))]))
    assert_error(video(sim, content=[frame(data_uri(1000, 400))]), 400, "InvalidParameter")
    assert_error(video(sim, content=[frame(data_uri(400, 1000))]), 400, "InvalidParameter")


def test_request_body_at_most_64_mb(sim):
    padding = "a" * (64 * 1024 * 1024)
    assert_error(video(sim, content=[{"type": "text", "text": padding}]), 400, "InvalidParameter")


@pytest.mark.parametrize(("field", "good", "bad"), [
    ("resolution", "480p", "4k"),
    ("ratio", "21:9", "2:1"),
    ("duration", 12, 13),
    ("duration", 2, 1),
    ("frames", 29, 30),
    ("frames", 289, 293),
    ("seed", SEED.maximum, SEED.maximum + 1),
    ("seed", -1, -2),
    ("camera_fixed", True, "yes"),
    ("watermark", False, 0),
    ("return_last_frame", True, "true"),
    ("service_tier", "flex", "fast"),
    ("execution_expires_after", 3600, 3599),
    ("execution_expires_after", 259200, 259201),
    ("callback_url", "http://127.0.0.1:1/cb", "not a url"),
    ("safety_identifier", "u" * 64, "u" * 65),
])
def test_body_fields_are_strongly_validated(sim, field, good, bad):
    assert_ok(video(sim, **{field: good}))
    assert_error(video(sim, **{field: bad}), 400, "InvalidParameter", field)


def test_adaptive_ratio_needs_an_image_and_follows_the_first_frame(sim):
    assert_error(video(sim, ratio="adaptive"), 400, "InvalidParameter", "ratio")
    created = assert_ok(video(sim, content=[frame(data_uri(720, 960))]))
    task = httpx.get(f"{sim.base_url}/contents/generations/tasks/{created['id']}", headers=auth()).json()
    assert task["ratio"] == "3:4"


def test_fields_the_model_lacks_are_refused_by_name_unless_its_switch_says_ignore(sim):
    for field, value in (("generate_audio", True), ("draft", True), ("priority", 1), ("tools", [])):
        response = video(sim, **{field: value})
        assert_error(response, 400, "InvalidParameter.UnsupportedParameter", field)
        assert f"`{field}`" in response.json()["error"]["message"]
    assert_ok(video(sim, generate_audio=None, draft=None, priority=None, tools=None))
    sim.configure(ignore_unsupported_fields=[VIDEO_MODEL])
    try:
        task_id = assert_ok(video(sim, draft=True, generate_audio=True))["id"]
        task = httpx.get(f"{sim.base_url}/contents/generations/tasks/{task_id}", headers=auth()).json()
        assert "draft" not in task and "generate_audio" not in task
        # The switch is per model: Seedream 4.5 still refuses what it lacks.
        assert_error(image(sim, output_format="png"), 400, "InvalidParameter.UnsupportedParameter", "output_format")
    finally:
        sim.configure(ignore_unsupported_fields=[])


def test_prompt_flags_are_weakly_validated_and_lose_to_body_fields(sim):
    created = assert_ok(video(sim, content=[{"type": "text", "text": "a cat --rs 480p --dur 3 --seed 11 --rt 9:9"}],
                              resolution="720p"))
    task = httpx.get(f"{sim.base_url}/contents/generations/tasks/{created['id']}", headers=auth()).json()
    assert (task["resolution"], task["duration"], task["seed"], task["ratio"]) == ("720p", 3, 11, "16:9")


def test_defaults_and_id_format(sim):
    created = assert_ok(video(sim))
    assert created["id"].startswith("cgt-") and len(created["id"]) == len("cgt-20250331175019-68d9t")
    task = httpx.get(f"{sim.base_url}/contents/generations/tasks/{created['id']}", headers=auth()).json()
    assert (task["resolution"], task["ratio"], task["duration"], task["framespersecond"]) == ("1080p", "16:9", 5, 24)
    assert (task["service_tier"], task["execution_expires_after"]) == ("default", 172800)
    assert 0 <= task["seed"] <= SEED.maximum
    assert "frames" not in task


@pytest.mark.parametrize("query", [
    "page_num=0", "page_num=501", "page_size=0", "page_size=501", "page_size=x", "filter.status=done",
    "filter.service_tier=fast",
])
def test_list_query_bounds(sim, query):
    response = httpx.get(f"{sim.base_url}/contents/generations/tasks?{query}", headers=auth())
    assert_error(response, 400, "InvalidParameter")


def test_unknown_task_is_404(sim):
    response = httpx.get(f"{sim.base_url}/contents/generations/tasks/cgt-20250101000000-zzzzz", headers=auth())
    assert_error(response, 404, "NotFound.TaskId")
    assert response.json()["error"]["type"] == "NotFound"
