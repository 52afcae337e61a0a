"""The API's input rules: every documented Ark limit and platform rule, reported per field, all at once."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from chalice.app import MultiDict
from PIL import Image

from chalicelib import catalog
from chalicelib.ark import capabilities
from chalicelib.ark.capabilities import PROMPT_MAX_CHARS, SEED, SEEDANCE_INPUT_IMAGES, SEEDREAM_INPUT_IMAGES
from chalicelib.errors import ValidationFailed
from chalicelib.schemas import (
    AdminTaskListQuery,
    ImageModelDefaults,
    ImageTaskRequest,
    LoginRequest,
    ModelCreate,
    ModelUpdate,
    StatusUpdateRequest,
    TaskListQuery,
    UploadRequest,
    UserCreate,
    UserUpdate,
    VideoModelDefaults,
    VideoTaskRequest,
    parse,
    parse_task_request,
)

PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF"}
UPLOAD_ID = "0123456789abcdef0123456789abcdef"


@cache
def image_bytes(image_format: str, width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), "white").save(buffer, PIL_FORMATS[image_format])
    return buffer.getvalue()


def data_uri(declared: str, data: bytes) -> str:
    return f"data:image/{declared};base64,{base64.b64encode(data).decode()}"


def png_uri(width: int, height: int, *, padded_to: int = 0, mode: str = "RGB") -> str:
    """A real PNG; trailing padding makes its byte size large without making it slow to build."""
    data = image_bytes("png", width, height, mode)
    return data_uri("png", data + b"\0" * max(0, padded_to - len(data)))


def failures(call: Callable[[], Any]) -> dict[str, dict[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        call()
    assert caught.value.status == 400 and caught.value.code == "validation_error"
    details = caught.value.details
    assert all(set(detail) == {"field", "message", "type"} for detail in details)
    return {detail["field"]: detail for detail in details}


def parse_task(body: Any) -> ImageTaskRequest | VideoTaskRequest:
    """A task request judged against its model's capabilities: the tests' model ids are table keys."""
    return parse_task_request(body, capabilities.find)


def image_task(**fields: Any) -> dict[str, Any]:
    return {"type": "image", "model_id": "seedream-4.5", "prompt": "a red fox in snow", **fields}


def video_task(params: dict[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
    return {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "waves at dusk",
            "params": params or {}, **fields}


def model_create(**fields: Any) -> dict[str, Any]:
    return {"model_id": "seedream-4.5", "type": "image", "upstream_model": "doubao-seedream-4-5-251128",
            "concurrency": 4, "daily_quota": 1000, **fields}


# --- Valid requests -----------------------------------------------------------------------------------------


def test_image_task_accepts_every_reference_form_and_decodes_inline_images_once() -> None:
    inline = {fmt: image_bytes(fmt, 40, 30) for fmt in PIL_FORMATS}
    images = [data_uri(fmt, data) for fmt, data in inline.items()]
    images += [data_uri("jpg", inline["jpeg"]), "https://cdn.example.com/ref.png?x=1", f"upload:{UPLOAD_ID}"]

    request = parse_task(image_task(prompt="  a fox  ", images=images, size="2k", max_images=6,
                                            watermark=False))

    assert isinstance(request, ImageTaskRequest)
    assert request.prompt == "a fox" and request.size == "2K" and request.max_images == 6
    assert request.watermark is False
    for ref, (fmt, data) in zip(request.images, inline.items(), strict=False):
        assert (ref.kind, ref.content_type, ref.data, ref.width, ref.height) == (
            "inline", f"image/{fmt}", data, 40, 30)
    jpg_alias, url, upload = request.images[6:]
    assert (jpg_alias.content_type, jpg_alias.data) == ("image/jpeg", inline["jpeg"])
    assert (url.kind, url.url) == ("url", "https://cdn.example.com/ref.png?x=1")
    assert (upload.kind, upload.upload_id) == ("upload", UPLOAD_ID)


@pytest.mark.parametrize(("size", "normalised"), [
    ("4K", "4K"), ("4k", "4K"), ("2560x1440", "2560x1440"), ("4096x4096", "4096x4096"),
    ("3750x1250", "3750x1250"), ("2048X2048", "2048x2048"), ("16384x1024", "16384x1024"),
])
def test_image_size_presets_and_pixel_sizes_within_range(size: str, normalised: str) -> None:
    assert parse_task(image_task(size=size)).size == normalised


def test_image_task_minimal_and_at_the_total_image_cap() -> None:
    assert parse_task(image_task()).images == []
    refs = [png_uri(15, 15)] * 14
    assert parse_task(image_task(images=refs, max_images=1)).max_images == 1


def test_reference_image_limits_are_inclusive_where_ark_says_so() -> None:
    # aspect exactly 16 and exactly 10 MB are allowed
    images = [png_uri(240, 15), png_uri(20, 20, padded_to=SEEDREAM_INPUT_IMAGES.max_bytes)]
    request = parse_task(image_task(images=images))
    assert [(ref.width, ref.height) for ref in request.images] == [(240, 15), (20, 20)]


def test_video_text_to_video_with_every_param() -> None:
    params = {"resolution": "720p", "ratio": "21:9", "duration": 12, "seed": SEED.maximum,
              "camera_fixed": True, "watermark": False, "return_last_frame": True}
    request = parse_task(video_task(params))
    assert isinstance(request, VideoTaskRequest)
    assert request.params.model_dump(exclude_none=True) == params and request.images == []


@pytest.mark.parametrize("frames", [29, 33, 121, 289])
def test_video_frames_of_the_form_25_plus_4n(frames: int) -> None:
    assert parse_task(video_task({"frames": frames, "seed": -1})).params.frames == frames


def test_video_first_and_last_frame_without_prompt_and_adaptive_ratio() -> None:
    first, last = png_uri(301, 301), png_uri(5999, 2400, mode="1")
    request = parse_task(video_task({"ratio": "adaptive"}, prompt="  ", images=[first, last]))
    assert request.prompt is None
    assert [(ref.kind, ref.width, ref.height) for ref in request.images] == [
        ("inline", 301, 301), ("inline", 5999, 2400)]
    assert request.params.ratio == "adaptive"


def test_model_create_fills_display_name_and_validates_defaults_by_type() -> None:
    image = parse(ModelCreate, model_create(defaults={"size": "4k", "watermark": True, "max_images": 4}))
    assert image.display_name == "seedream-4.5" and image.enabled is True and image.lane is None
    assert image.defaults == ImageModelDefaults(size="4K", watermark=True, max_images=4)

    video = parse(ModelCreate, model_create(
        model_id="seedance-pro", type="video", upstream_model="ep-20250101123456-abcde", display_name="Seedance",
        concurrency=1000, daily_quota=0, user_daily_quota=0, max_running_per_user=1, lane="video", enabled=False,
        defaults={"resolution": "480p", "ratio": "9:16", "duration": 2, "return_last_frame": False}))
    assert video.display_name == "Seedance" and video.lane == "video"
    assert isinstance(video.defaults, VideoModelDefaults) and video.defaults.ratio == "9:16"


def test_model_update_is_partial_and_null_clears_optional_limits() -> None:
    update = parse(ModelUpdate, {"concurrency": 2, "user_daily_quota": None, "lane": None})
    assert update.model_dump(exclude_unset=True) == {"concurrency": 2, "user_daily_quota": None, "lane": None}
    video_defaults = parse(ModelUpdate, {"defaults": {"resolution": "1080p", "watermark": True}}).defaults
    assert isinstance(video_defaults, VideoModelDefaults)
    assert isinstance(parse(ModelUpdate, {"defaults": {"size": "2048x2048"}}).defaults, ImageModelDefaults)


def test_users_are_case_insensitive_and_created_as_enabled_users() -> None:
    login = parse(LoginRequest, {"username": "Alice.B-1", "password": "x"})
    assert (login.username, login.password) == ("alice.b-1", "x")
    created = parse(UserCreate, {"username": "Bob_2", "password": "12345678"})
    assert (created.username, created.role, created.disabled) == ("bob_2", "user", False)
    assert "12345678" not in repr(created)
    assert parse(UserUpdate, {"disabled": True}).model_dump(exclude_unset=True) == {"disabled": True}


def test_task_list_queries_coerce_query_strings() -> None:
    assert parse(TaskListQuery, {}).limit == 20
    query = parse(TaskListQuery, {"status": "running", "type": "video", "model_id": "m1", "limit": "100",
                                  "cursor": "abc"})
    assert (query.status, query.type, query.limit, query.cursor) == ("running", "video", 100, "abc")
    # Chalice hands query strings over as a MultiDict; the last value of a repeated key wins.
    admin = parse(AdminTaskListQuery, MultiDict({"user": ["Alice"], "limit": ["5", "1"]}))
    assert (admin.user, admin.limit) == ("alice", 1)


def test_upload_and_status_update_requests() -> None:
    upload = parse(UploadRequest, {"content_type": "image/webp", "size": SEEDANCE_INPUT_IMAGES.max_bytes})
    assert upload.size == SEEDANCE_INPUT_IMAGES.max_bytes
    update = parse(StatusUpdateRequest, {"status": "failed", "error": {"code": "Boom", "message": "it broke"}})
    assert update.error is not None and update.error.code == "Boom"
    done = parse(StatusUpdateRequest, {"status": "succeeded", "video_url": "https://r/v.mp4",
                                       "last_frame_url": "https://r/f.png", "result_urls": []})
    assert done.video_url == "https://r/v.mp4"


# --- One rule per case: only the named field is reported ----------------------------------------------------

BAD_IMAGE_TASKS = {
    "prompt missing": ({"prompt": None}, "prompt"),
    "prompt blank": ({"prompt": " \n "}, "prompt"),
    "prompt too long": ({"prompt": "x" * (PROMPT_MAX_CHARS + 1)}, "prompt"),
    "prompt not a string": ({"prompt": ["a"]}, "prompt"),
    "model_id not a slug": ({"model_id": "Seedream 4.5"}, "model_id"),
    "images not a list": ({"images": "https://a.example/x.png"}, "images"),
    "more than 14 images": ({"images": [f"upload:{UPLOAD_ID}"] * 15}, "images"),
    "image not a string": ({"images": [{"url": "https://a.example/x.png"}]}, "images[0]"),
    "http URL": ({"images": ["http://a.example/x.png"]}, "images[0]"),
    "ftp URL": ({"images": ["ftp://a.example/x.png"]}, "images[0]"),
    "URL without scheme": ({"images": ["a.example/x.png"]}, "images[0]"),
    "URL without host": ({"images": ["https://"]}, "images[0]"),
    "URL with port only": ({"images": ["https://:443/x.png"]}, "images[0]"),
    "URL with credentials": ({"images": ["https://user:pw@a.example/x.png"]}, "images[0]"),
    "upload id too short": ({"images": ["upload:abc"]}, "images[0]"),
    "upload id upper-case": ({"images": [f"upload:{UPLOAD_ID.upper()}"]}, "images[0]"),
    "data URI upper-case format": ({"images": [data_uri("PNG", image_bytes("png", 20, 20))]}, "images[0]"),
    "data URI unlisted format": ({"images": [data_uri("heic", image_bytes("png", 20, 20))]}, "images[0]"),
    "data URI without base64": ({"images": ["data:image/png,abc"]}, "images[0]"),
    "base64 bad padding": ({"images": ["data:image/png;base64,iVBORw0KGgo"]}, "images[0]"),
    "base64 bad character": ({"images": ["data:image/png;base64,iVBO*w0KGgo="]}, "images[0]"),
    "base64 with newline": ({"images": [png_uri(20, 20)[:40] + "\n" + png_uri(20, 20)[40:]]}, "images[0]"),
    "not an image": ({"images": [data_uri("png", b"hello, world")]}, "images[0]"),
    "declared png, really jpeg": ({"images": [data_uri("png", image_bytes("jpeg", 20, 20))]}, "images[0]"),
    "side of 14 px": ({"images": [png_uri(14, 20)]}, "images[0]"),
    "aspect above 16": ({"images": [png_uri(255, 15)]}, "images[0]"),
    "aspect below 1/16": ({"images": [png_uri(15, 255)]}, "images[0]"),
    "more than 36 M pixels": ({"images": [png_uri(6001, 6000, mode="1")]}, "images[0]"),
    "more than 10 MB": ({"images": [png_uri(20, 20, padded_to=SEEDREAM_INPUT_IMAGES.max_bytes + 1)]}, "images[0]"),
    "size 1K is Seedream 4.0 only": ({"size": "1K"}, "size"),
    "size too few pixels": ({"size": "1500x1500"}, "size"),
    "size too many pixels": ({"size": "4097x4096"}, "size"),
    "size aspect above 16": ({"size": "16400x1000"}, "size"),
    "size not WxH": ({"size": "2048*2048"}, "size"),
    "size with non-ASCII digits": ({"size": "²⁰⁴⁸x2048"}, "size"),
    "size absurdly long": ({"size": "9" * 5000 + "x1"}, "size"),
    "max_images 0": ({"max_images": 0}, "max_images"),
    "max_images 16": ({"max_images": 16}, "max_images"),
    "max_images as string": ({"max_images": "3"}, "max_images"),
    "max_images as bool": ({"max_images": True}, "max_images"),
    "references + max_images above 15": ({"images": [f"upload:{UPLOAD_ID}"] * 2, "max_images": 14}, "max_images"),
    "watermark yes": ({"watermark": "yes"}, "watermark"),
    "watermark 1": ({"watermark": 1}, "watermark"),
    "server-owned status": ({"status": "succeeded"}, "status"),
    "server-owned user_id": ({"user_id": "admin"}, "user_id"),
    "server-owned external_id": ({"external_id": "cgt-1"}, "external_id"),
    "server-owned id": ({"id": "t1"}, "id"),
    "unknown field": ({"stream": True}, "stream"),
}


@pytest.mark.abuse
@pytest.mark.parametrize(("changes", "field"), BAD_IMAGE_TASKS.values(), ids=BAD_IMAGE_TASKS.keys())
def test_image_task_rule(changes: dict[str, Any], field: str) -> None:
    body = {key: value for key, value in image_task(**changes).items() if value is not None}
    assert set(failures(lambda: parse_task(body))) == {field}


BAD_VIDEO_TASKS = {
    "neither prompt nor image": ({"prompt": None}, {}, "prompt"),
    "prompt too long": ({"prompt": "x" * (PROMPT_MAX_CHARS + 1)}, {}, "prompt"),
    "three images": ({"images": [f"upload:{UPLOAD_ID}"] * 3}, {}, "images"),
    "frame side of 300 px": ({"images": [png_uri(300, 400)]}, {}, "images[0]"),
    "frame side of 6000 px": ({"images": [png_uri(6000, 3000, mode="1")]}, {}, "images[0]"),
    "frame aspect 0.4": ({"images": [png_uri(320, 800)]}, {}, "images[0]"),
    "frame aspect 2.5": ({"images": [png_uri(800, 320)]}, {}, "images[0]"),
    "frame of 30 MB": ({"images": [png_uri(400, 400, padded_to=SEEDANCE_INPUT_IMAGES.max_bytes)]}, {}, "images[0]"),
    "bad last frame": ({"images": [png_uri(400, 400), "http://a.example/last.png"]}, {}, "images[1]"),
    "params not an object": ({"params": "1080p"}, None, "params"),
    "resolution 4k": ({}, {"resolution": "4k"}, "params.resolution"),
    "resolution upper-case": ({}, {"resolution": "1080P"}, "params.resolution"),
    "ratio 2:1": ({}, {"ratio": "2:1"}, "params.ratio"),
    "adaptive ratio without image": ({}, {"ratio": "adaptive"}, "params.ratio"),
    "duration 1": ({}, {"duration": 1}, "params.duration"),
    "duration 13": ({}, {"duration": 13}, "params.duration"),
    "duration as string": ({}, {"duration": "5"}, "params.duration"),
    "duration as float": ({}, {"duration": 5.0}, "params.duration"),
    "frames 25": ({}, {"frames": 25}, "params.frames"),
    "frames 30": ({}, {"frames": 30}, "params.frames"),
    "frames 293": ({}, {"frames": 293}, "params.frames"),
    "duration and frames": ({}, {"duration": 5, "frames": 121}, "params.frames"),
    "seed -2": ({}, {"seed": -2}, "params.seed"),
    "seed 2^31": ({}, {"seed": SEED.maximum + 1}, "params.seed"),
    "camera_fixed yes": ({}, {"camera_fixed": "yes"}, "params.camera_fixed"),
    "watermark 1": ({}, {"watermark": 1}, "params.watermark"),
    "return_last_frame 0": ({}, {"return_last_frame": 0}, "params.return_last_frame"),
    "unknown param": ({}, {"fps": 24}, "params.fps"),
    "server-owned status": ({"status": "queued"}, {}, "status"),
}


@pytest.mark.abuse
@pytest.mark.parametrize(("changes", "params", "field"), BAD_VIDEO_TASKS.values(), ids=BAD_VIDEO_TASKS.keys())
def test_video_task_rule(changes: dict[str, Any], params: dict[str, Any] | None, field: str) -> None:
    body = {key: value for key, value in video_task(params, **changes).items() if value is not None}
    assert set(failures(lambda: parse_task(body))) == {field}


@pytest.mark.parametrize("body", [None, [], "text", 42, {"model_id": "m"}, {"type": "audio"}, {"type": ["image"]}])
def test_task_type_decides_the_schema(body: Any) -> None:
    expected = "type" if isinstance(body, dict) else ""
    assert set(failures(lambda: parse_task(body))) == {expected}


def test_every_bad_field_is_listed_at_once_without_echoing_values() -> None:
    secret_payload = base64.b64encode(b"not an image, but secret" * 10).decode()
    body = image_task(model_id="X", prompt="", size="1K", max_images=99, watermark="no", status="queued",
                      images=[f"data:image/png;base64,{secret_payload}", "http://a.example/x.png",
                              png_uri(20, 20), "upload:nope"])

    found = failures(lambda: parse_task(body))

    # No model to judge `size` and `max_images` against: they are the model's to refuse (see the API tests).
    assert set(found) == {"model_id", "prompt", "watermark", "status",
                          "images[0]", "images[1]", "images[3]"}
    assert secret_payload not in json.dumps(list(found.values()))


def test_video_rules_between_fields_are_listed_together() -> None:
    body = {"type": "video", "model_id": "seedance-1.0-pro", "params": {"ratio": "adaptive"}}
    assert set(failures(lambda: parse_task(body))) == {"prompt", "params.ratio"}


BAD_MODEL_CREATES = {
    "model_id upper-case": ({"model_id": "Seedream"}, "model_id"),
    "model_id one char": ({"model_id": "a"}, "model_id"),
    "model_id starts with dash": ({"model_id": "-ab"}, "model_id"),
    "model_id with underscore": ({"model_id": "a_b"}, "model_id"),
    "model_id 65 chars": ({"model_id": "a" * 65}, "model_id"),
    "type audio": ({"type": "audio"}, "type"),
    "upstream_model with spaces": ({"upstream_model": "doubao seedream"}, "upstream_model"),
    "upstream_model empty": ({"upstream_model": ""}, "upstream_model"),
    "upstream_model 129 chars": ({"upstream_model": "a" * 129}, "upstream_model"),
    "display_name blank": ({"display_name": "  "}, "display_name"),
    "display_name 101 chars": ({"display_name": "a" * 101}, "display_name"),
    "concurrency 0": ({"concurrency": 0}, "concurrency"),
    "concurrency 1001": ({"concurrency": 1001}, "concurrency"),
    "concurrency as string": ({"concurrency": "4"}, "concurrency"),
    "daily_quota -1": ({"daily_quota": -1}, "daily_quota"),
    "user_daily_quota -1": ({"user_daily_quota": -1}, "user_daily_quota"),
    "max_running_per_user 0": ({"max_running_per_user": 0}, "max_running_per_user"),
    "unknown lane": ({"lane": "gpu"}, "lane"),
    "enabled as string": ({"enabled": "true"}, "enabled"),
    "video default on image model": ({"defaults": {"resolution": "720p"}}, "defaults.resolution"),
    "defaults not an object": ({"defaults": ["2K"]}, "defaults"),
    "video default adaptive": ({"type": "video", "defaults": {"ratio": "adaptive"}}, "defaults.ratio"),
    "image default on video model": ({"type": "video", "defaults": {"size": "2K"}}, "defaults.size"),
    "server-owned created_at": ({"created_at": "2025-01-01"}, "created_at"),
    "server-owned usage": ({"usage": {}}, "usage"),
    "server-owned slots_in_use": ({"slots_in_use": 0}, "slots_in_use"),
}


@pytest.mark.parametrize(("changes", "field"), BAD_MODEL_CREATES.values(), ids=BAD_MODEL_CREATES.keys())
def test_model_create_rule(changes: dict[str, Any], field: str) -> None:
    assert set(failures(lambda: parse(ModelCreate, model_create(**changes)))) == {field}


SEEDANCE_1_0_PRO = capabilities.model("seedance-1.0-pro").providers["volcengine"].model_id
BAD_MODEL_DEFAULTS = {
    "image default size 1K on 4.5": ({"defaults": {"size": "1K"}}, "defaults.size"),
    "image default size 3K on 4.5": ({"defaults": {"size": "3K"}}, "defaults.size"),
    "image default max_images 16": ({"defaults": {"max_images": 16}}, "defaults.max_images"),
    "image default png on 4.5": ({"defaults": {"output_format": "png"}}, "defaults.output_format"),
    "video default duration 13": ({"type": "video", "upstream_model": SEEDANCE_1_0_PRO,
                                   "defaults": {"duration": 13}}, "defaults.duration"),
    "video default audio on 1.0 pro": ({"type": "video", "upstream_model": SEEDANCE_1_0_PRO,
                                        "defaults": {"generate_audio": True}}, "defaults.generate_audio"),
}


@pytest.mark.parametrize(("changes", "field"), BAD_MODEL_DEFAULTS.values(), ids=BAD_MODEL_DEFAULTS.keys())
def test_model_defaults_are_judged_against_the_upstream_models_capabilities(changes: dict[str, Any],
                                                                            field: str) -> None:
    request = parse(ModelCreate, model_create(**changes))
    assert set(failures(lambda: catalog.checked_upstream(request))) == {field}


def test_model_create_lists_every_missing_required_field() -> None:
    assert set(failures(lambda: parse(ModelCreate, {"display_name": "x"}))) == {
        "model_id", "type", "upstream_model", "concurrency", "daily_quota"}


BAD_MODEL_UPDATES = {
    "empty update": ({}, ""),
    "model_id is not updatable": ({"model_id": "other"}, "model_id"),
    "type is not updatable": ({"type": "video"}, "type"),
    "concurrency null": ({"concurrency": None}, "concurrency"),
    "daily_quota null": ({"daily_quota": None}, "daily_quota"),
    "enabled null": ({"enabled": None}, "enabled"),
    "display_name null": ({"display_name": None}, "display_name"),
    "concurrency 0": ({"concurrency": 0}, "concurrency"),
    "mixed defaults": ({"defaults": {"resolution": "720p", "size": "2K"}}, "defaults.size"),
    "server-owned updated_at": ({"updated_at": "2025-01-01"}, "updated_at"),
}


@pytest.mark.parametrize(("body", "field"), BAD_MODEL_UPDATES.values(), ids=BAD_MODEL_UPDATES.keys())
def test_model_update_rule(body: dict[str, Any], field: str) -> None:
    assert set(failures(lambda: parse(ModelUpdate, body))) == {field}


BAD_USER_BODIES = {
    "login username too short": (LoginRequest, {"username": "ab", "password": "x"}, "username"),
    "login username 65 chars": (LoginRequest, {"username": "a" * 65, "password": "x"}, "username"),
    "login username with space": (LoginRequest, {"username": "a b c", "password": "x"}, "username"),
    "login username non-ASCII": (LoginRequest, {"username": "jörg", "password": "x"}, "username"),
    "login password empty": (LoginRequest, {"username": "alice", "password": ""}, "password"),
    "login password 257 chars": (LoginRequest, {"username": "alice", "password": "p" * 257}, "password"),
    "create password 7 chars": (UserCreate, {"username": "alice", "password": "1234567"}, "password"),
    "create role root": (UserCreate, {"username": "alice", "password": "12345678", "role": "root"}, "role"),
    "create disabled as string": (UserCreate, {"username": "alice", "password": "12345678", "disabled": "no"},
                                  "disabled"),
    "create server-owned created_at": (UserCreate, {"username": "alice", "password": "12345678",
                                                    "created_at": "x"}, "created_at"),
    "update empty": (UserUpdate, {}, ""),
    "update role null": (UserUpdate, {"role": None}, "role"),
    "update password too short": (UserUpdate, {"password": "short"}, "password"),
    "update username not changeable": (UserUpdate, {"username": "bob"}, "username"),
}


@pytest.mark.parametrize(("schema", "body", "field"), BAD_USER_BODIES.values(), ids=BAD_USER_BODIES.keys())
def test_user_body_rule(schema: type, body: dict[str, Any], field: str) -> None:
    assert set(failures(lambda: parse(schema, body))) == {field}


def test_passwords_are_never_echoed() -> None:
    password = "correct horse battery staple " * 10
    found = failures(lambda: parse(UserCreate, {"username": "x", "password": password, "role": "root"}))
    assert set(found) == {"username", "password", "role"}
    assert password.strip() not in json.dumps(list(found.values()))


BAD_OTHER_BODIES = {
    "query limit 0": (TaskListQuery, {"limit": "0"}, "limit"),
    "query limit 101": (TaskListQuery, {"limit": "101"}, "limit"),
    "query limit not a number": (TaskListQuery, {"limit": "ten"}, "limit"),
    "query unknown status": (TaskListQuery, {"status": "done"}, "status"),
    "query unknown type": (TaskListQuery, {"type": "audio"}, "type"),
    "query bad model_id": (TaskListQuery, {"model_id": "A B"}, "model_id"),
    "query empty cursor": (TaskListQuery, {"cursor": ""}, "cursor"),
    "query unknown parameter": (TaskListQuery, {"user": "alice"}, "user"),
    "admin query bad user": (AdminTaskListQuery, {"user": "a"}, "user"),
    "upload image/jpg": (UploadRequest, {"content_type": "image/jpg", "size": 10}, "content_type"),
    "upload svg": (UploadRequest, {"content_type": "image/svg+xml", "size": 10}, "content_type"),
    "upload size 0": (UploadRequest, {"content_type": "image/png", "size": 0}, "size"),
    "upload above 30 MB": (UploadRequest, {"content_type": "image/png",
                                           "size": SEEDANCE_INPUT_IMAGES.max_bytes + 1}, "size"),
    "upload size as string": (UploadRequest, {"content_type": "image/png", "size": "10"}, "size"),
    "status unknown": (StatusUpdateRequest, {"status": "done"}, "status"),
    "status error without message": (StatusUpdateRequest, {"status": "failed", "error": {"code": "X"}},
                                     "error.message"),
    "status result_urls not a list": (StatusUpdateRequest, {"status": "succeeded", "result_urls": "u"},
                                      "result_urls"),
    "status result url empty": (StatusUpdateRequest, {"status": "succeeded", "result_urls": ["https://r/a.png", ""]},
                                "result_urls[1]"),
    "status result url in a bucket": (StatusUpdateRequest,
                                      {"status": "succeeded", "result_urls": ["s3://any-bucket/any/key.png"]},
                                      "result_urls[0]"),
    "status video url over http": (StatusUpdateRequest, {"status": "succeeded", "video_url": "http://r/v.mp4"},
                                   "video_url"),
    "status video url as a path": (StatusUpdateRequest, {"status": "succeeded", "video_url": "/tasks/t/v.mp4"},
                                   "video_url"),
    "status last frame url in a bucket": (StatusUpdateRequest,
                                          {"status": "succeeded", "video_url": "https://r/v.mp4",
                                           "last_frame_url": "s3://any-bucket/frame.png"}, "last_frame_url"),
    "status last frame url with credentials": (StatusUpdateRequest,
                                               {"status": "succeeded", "video_url": "https://r/v.mp4",
                                                "last_frame_url": "https://user:pw@r/f.png"}, "last_frame_url"),
    "status server-owned user_id": (StatusUpdateRequest, {"status": "failed", "user_id": "x"}, "user_id"),
}


@pytest.mark.parametrize(("schema", "body", "field"), BAD_OTHER_BODIES.values(), ids=BAD_OTHER_BODIES.keys())
def test_query_upload_and_status_rule(schema: type, body: dict[str, Any], field: str) -> None:
    assert set(failures(lambda: parse(schema, body))) == {field}


@pytest.mark.parametrize("body", [None, [], "{}", 1])
def test_a_body_that_is_not_an_object_is_one_problem(body: Any) -> None:
    found = failures(lambda: parse(UserCreate, body))
    assert list(found) == [""]
