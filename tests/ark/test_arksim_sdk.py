"""The official Ark SDK (volcengine-ark-runtime) works unchanged against the simulator's base URL, and every
simulator answer parses into the SDK's types and matches Ark's documented examples."""

from __future__ import annotations

import io
import json
from inspect import isclass
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import av
import httpx
import pydantic
import pytest
from PIL import Image
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime._exceptions import (
    ArkAuthenticationError,
    ArkBadRequestError,
    ArkNotFoundError,
    ArkRateLimitError,
)
from volcenginesdkarkruntime.types.content_generation.content_generation_task import ContentGenerationTask
from volcenginesdkarkruntime.types.content_generation.content_generation_task_id import ContentGenerationTaskID
from volcenginesdkarkruntime.types.content_generation.list_content_generation_tasks_response import (
    ListContentGenerationTasksResponse,
)
from volcenginesdkarkruntime.types.images.image_gen_completed_event import ImageGenCompletedEvent
from volcenginesdkarkruntime.types.images.image_gen_generating_event import ImageGenGeneratingEvent
from volcenginesdkarkruntime.types.images.images import ImagesResponse, SequentialImageGenerationOptions

from tests.polling import wait_for

from .conftest import API_KEY, IMAGE_MODEL, VIDEO_MODEL, auth, data_uri

SEEDANCE_1_5 = "doubao-seedance-1-5-pro-251215"
SEEDANCE_2_0 = "doubao-seedance-2-0-260128"


@pytest.fixture
def sdk(ark):
    client = Ark(base_url=ark.base_url, api_key=API_KEY, max_retries=0, timeout=30)
    yield client
    client.close()


def test_image_generation(sdk):
    response = sdk.images.generate(model=IMAGE_MODEL, prompt="a red kite over the sea", size="2304x1728",
                                   watermark=False)
    assert response.model == IMAGE_MODEL
    assert response.data[0].size == "2304x1728"
    assert response.usage.generated_images == 1
    with Image.open(io.BytesIO(httpx.get(response.data[0].url).content)) as image:
        assert image.size == (2304, 1728)


def test_group_generation_and_streaming(sdk):
    group = sdk.images.generate(
        model=IMAGE_MODEL, prompt="four images of the seasons", sequential_image_generation="auto",
        sequential_image_generation_options=SequentialImageGenerationOptions(max_images=4), response_format="url",
    )
    assert len(group.data) == 4
    events = list(sdk.images.generate(model=IMAGE_MODEL, prompt="two views", stream=True,
                                      sequential_image_generation="auto",
                                      sequential_image_generation_options=SequentialImageGenerationOptions(max_images=2)))
    assert [event.type for event in events] == ["image_generation.partial_succeeded"] * 2 + [
        "image_generation.completed"]
    assert [event.image_index for event in events[:2]] == [0, 1]
    assert all(event.url.startswith("http://127.0.0.1:") for event in events[:2])


def test_errors_become_the_sdks_typed_exceptions(ark, sdk):
    with pytest.raises(ArkBadRequestError) as bad:
        sdk.images.generate(model=IMAGE_MODEL, prompt="a cat", size="1K")
    assert (bad.value.code, bad.value.param) == ("InvalidParameter", "size")
    with pytest.raises(ArkNotFoundError) as missing:
        sdk.images.generate(model="doubao-unknown-000000", prompt="a cat")
    assert missing.value.code == "InvalidEndpointOrModel.NotFound"
    ark.configure(rate_limit_fraction=1.0)
    with pytest.raises(ArkRateLimitError) as limited:
        sdk.images.generate(model=IMAGE_MODEL, prompt="a cat")
    assert limited.value.code == "ModelAccountIpmRateLimitExceeded"
    ark.configure(rate_limit_fraction=0.0, api_key="another-key")
    with pytest.raises(ArkAuthenticationError) as denied:
        sdk.images.generate(model=IMAGE_MODEL, prompt="a cat")
    assert denied.value.code == "AuthenticationError"


def test_video_task_create_get_list_and_delete(ark, sdk):
    created = sdk.content_generation.tasks.create(
        model=VIDEO_MODEL,
        content=[{"type": "text", "text": "a paper boat on a river"}],
        resolution="480p", ratio="1:1", duration=2, seed=3, return_last_frame=True,
    )
    task = wait_for(lambda: (found := sdk.content_generation.tasks.get(task_id=created.id)).status == "succeeded"
                    and found)
    assert (task.resolution, task.ratio, task.duration, task.seed) == ("480p", "1:1", 2, 3)
    assert task.content.video_url.endswith(".mp4")
    assert task.content.last_frame_url.endswith(".png")
    assert task.usage.completion_tokens == 640 * 640 * 48 // 1024

    ark.configure(video_queue_s=60.0)
    queued = sdk.content_generation.tasks.create(model=VIDEO_MODEL, content=[{"type": "text", "text": "later"}])
    listing = sdk.content_generation.tasks.list(page_num=1, page_size=10, task_ids=[created.id, queued.id])
    assert listing.total == 2
    assert [item.id for item in listing.items] == [queued.id, created.id]
    assert sdk.content_generation.tasks.list(status="queued").items[0].id == queued.id

    sdk.content_generation.tasks.delete(queued.id)
    assert sdk.content_generation.tasks.get(task_id=queued.id).status == "cancelled"
    sdk.content_generation.tasks.delete(created.id)
    with pytest.raises(ArkNotFoundError):
        sdk.content_generation.tasks.get(task_id=created.id)


def succeeded(sdk, task_id: str) -> Any:
    return wait_for(lambda: (found := sdk.content_generation.tasks.get(task_id=task_id)).status == "succeeded"
                    and found)


def audio_streams(url: str) -> list[tuple[str, int]]:
    with av.open(io.BytesIO(httpx.get(url).content)) as container:
        return [(stream.codec_context.name, stream.codec_context.channels) for stream in container.streams.audio]


def test_the_sdk_makes_a_1_5_pro_video_with_audio_then_renders_its_draft(sdk):
    created = sdk.content_generation.tasks.create(
        model=SEEDANCE_1_5, content=[{"type": "text", "text": "waves on a shore"}], generate_audio=True,
        resolution="720p", ratio="16:9", duration=5,
    )
    task = succeeded(sdk, created.id)
    assert (task.generate_audio, task.duration, task.usage.completion_tokens) == (True, 5, 108_900)
    assert audio_streams(task.content.video_url) == [("aac", 1)]

    draft = succeeded(sdk, sdk.content_generation.tasks.create(
        model=SEEDANCE_1_5, content=[{"type": "text", "text": "waves on a shore"}], draft=True, seed=7).id)
    assert (draft.draft, draft.resolution) == (True, "480p")
    render = succeeded(sdk, sdk.content_generation.tasks.create(
        model=SEEDANCE_1_5, content=[{"type": "draft_task", "draft_task": {"id": draft.id}}]).id)
    assert (render.draft, render.draft_task_id, render.seed, render.resolution) == (False, draft.id, 7, "720p")


def test_the_sdk_makes_a_2_0_video_from_reference_images(sdk):
    content = [{"type": "text", "text": "the cat from image 1 meets the dog from image 2"},
               {"type": "image_url", "image_url": {"url": data_uri(640, 640)}, "role": "reference_image"},
               {"type": "image_url", "image_url": {"url": data_uri(800, 600)}, "role": "reference_image"}]
    task = succeeded(sdk, sdk.content_generation.tasks.create(model=SEEDANCE_2_0, content=content,
                                                              resolution="480p", duration=4).id)
    assert (task.model, task.ratio, task.resolution, task.priority) == (SEEDANCE_2_0, "1:1", "480p", 0)
    assert task.usage.completion_tokens == 640 * 640 * 97 // 1024
    with pytest.raises(ArkBadRequestError) as mixed:
        sdk.content_generation.tasks.create(model=SEEDANCE_2_0, content=[
            {"type": "image_url", "image_url": {"url": data_uri(640, 640)}, "role": "first_frame"}, content[1]])
    assert mixed.value.code == "InvalidParameter"


# --- every answer, as the SDK's types read it, against Ark's documented examples ---------------------------------

# Ark's documented example answers (docs/ark.md, "Frames and tokens"). Values of the keys in VOLATILE differ per
# call and are compared by type only.
IMAGE_EXAMPLE = {"model": IMAGE_MODEL, "created": 1757321139,
                 "data": [{"url": "https://ark.example/a.jpeg", "size": "2048x2048"}],
                 "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}
STREAM_IMAGE_EXAMPLE = {"type": "image_generation.partial_succeeded", "model": IMAGE_MODEL, "created": 1757321139,
                        "image_index": 0, "url": "https://ark.example/a.jpeg", "size": "2048x2048"}
STREAM_FAILED_EXAMPLE = {"type": "image_generation.partial_failed", "model": IMAGE_MODEL, "created": 1757321139,
                         "image_index": 0, "error": {
                             "code": "OutputImageSensitiveContentDetected",
                             "message": "The request failed because the output image may contain sensitive "
                                        "information."}}
STREAM_COMPLETED_EXAMPLE = {"type": "image_generation.completed", "model": IMAGE_MODEL, "created": 1757321139,
                            "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}
CREATE_EXAMPLE = {"id": "cgt-20250331175019-68d9t"}
_TASK = {"id": "cgt-20250331175019-68d9t", "status": "succeeded", "error": None,
         "content": {"video_url": "https://ark.example/v.mp4"}, "created_at": 1743414619, "updated_at": 1743414673,
         "seed": 10, "ratio": "16:9", "duration": 5, "framespersecond": 24, "service_tier": "default",
         "execution_expires_after": 172800}
TASK_EXAMPLES = {
    # 1080p 16:9, 5 s on the 1.0 sizes
    VIDEO_MODEL: {**_TASK, "model": VIDEO_MODEL, "resolution": "1080p",
                  "usage": {"completion_tokens": 244800, "total_tokens": 244800}},
    # 720p 16:9, 5 s on the 1.5 / 2.x sizes
    SEEDANCE_1_5: {**_TASK, "model": SEEDANCE_1_5, "resolution": "720p", "generate_audio": True, "draft": False,
                   "usage": {"completion_tokens": 108900, "total_tokens": 108900}},
    SEEDANCE_2_0: {**_TASK, "model": SEEDANCE_2_0, "resolution": "720p", "generate_audio": True, "priority": 0,
                   "usage": {"completion_tokens": 108900, "total_tokens": 108900}},
}
VOLATILE = {"id", "created", "created_at", "updated_at", "url", "video_url", "seed"}
# Documented wire names the SDK's models spell otherwise (`created_at`, `tool`).
SDK_UNKNOWN = {"created", "tools"}


def sdk_problems(sdk_type: type[pydantic.BaseModel], answer: dict[str, Any], path: str = "") -> list[str]:
    """Where `answer` does not read as `sdk_type`: a key the SDK does not know, or a value not of the type the SDK
    declares (strictly; null counts as absent, as the SDK's readers take it)."""
    problems = []
    for key, value in answer.items():
        field = sdk_type.model_fields.get(key)
        if field is None:
            if key not in SDK_UNKNOWN:
                problems.append(f"{path}{key}: unknown to {sdk_type.__name__}")
        elif value is not None:
            problems += _value_problems(field.annotation, value, f"{path}{key}")
    return problems


def _value_problems(annotation: Any, value: Any, path: str) -> list[str]:
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        options = [option for option in get_args(annotation) if option is not NoneType]
        found = [_value_problems(option, value, path) for option in options]
        return [] if any(not problems for problems in found) else found[0]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [problem for index, item in enumerate(value)
                for problem in _value_problems(get_args(annotation)[0], item, f"{path}[{index}]")]
    if isclass(annotation) and issubclass(annotation, pydantic.BaseModel):
        return sdk_problems(annotation, value, f"{path}.") if isinstance(value, dict) else [f"{path}: not an object"]
    try:
        pydantic.TypeAdapter(annotation).validate_python(value, strict=True)
    except pydantic.ValidationError:
        return [f"{path}: {value!r} is not {annotation}"]
    return []


def example_problems(answer: Any, example: Any, path: str = "") -> list[str]:
    """Where `answer` differs from the documented example: a missing key, or another value (type only for
    VOLATILE keys)."""
    if isinstance(example, dict):
        if not isinstance(answer, dict):
            return [f"{path}: not an object"]
        return [problem for key, value in example.items()
                for problem in (example_problems(answer[key], value, f"{path}.{key}".lstrip(".")) if key in answer
                                else [f"{path}.{key}: missing".lstrip(".")])]
    if isinstance(example, list):
        return [problem for got, expected in zip(answer, example, strict=False)
                for problem in example_problems(got, expected, path)]
    if path.rsplit(".", 1)[-1] in VOLATILE:
        return [] if type(answer) is type(example) else [f"{path}: {answer!r} is not a {type(example).__name__}"]
    return [] if answer == example else [f"{path}: {answer!r} != {example!r}"]


def read(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_every_answer_reads_as_the_sdks_types_and_matches_the_documented_examples(ark):
    base, headers = ark.base_url, auth()
    image = read(httpx.post(f"{base}/images/generations", headers=headers,
                            json={"model": IMAGE_MODEL, "prompt": "a cat", "watermark": False}))
    ark.configure(output_sensitive_marker="FIRST-FAILS")
    stream = httpx.post(f"{base}/images/generations", headers=headers, json={
        "model": IMAGE_MODEL, "prompt": "FIRST-FAILS two views", "stream": True,
        "sequential_image_generation": "auto"}).text
    events = [json.loads(line.removeprefix("data: ")) for line in stream.splitlines()
              if line.startswith("data: {")]
    checks: list[tuple[type[pydantic.BaseModel], Any, Any]] = [
        (ImagesResponse, image, IMAGE_EXAMPLE),
        (ImageGenGeneratingEvent, events[0], STREAM_FAILED_EXAMPLE),
        (ImageGenGeneratingEvent, events[1], {**STREAM_IMAGE_EXAMPLE, "image_index": 1}),
        (ImageGenCompletedEvent, events[2], STREAM_COMPLETED_EXAMPLE),
    ]
    for model, example in TASK_EXAMPLES.items():
        body = {"model": model, "content": [{"type": "text", "text": "a cat"}], "resolution": example["resolution"],
                "ratio": "16:9", "duration": 5}
        created = read(httpx.post(f"{base}/contents/generations/tasks", headers=headers, json=body))
        checks.append((ContentGenerationTaskID, created, CREATE_EXAMPLE))
        task = wait_for(lambda created=created: (found := read(httpx.get(
            f"{base}/contents/generations/tasks/{created['id']}", headers=headers)))["status"] == "succeeded"
            and found)
        checks.append((ContentGenerationTask, task, example))
    listing = read(httpx.get(f"{base}/contents/generations/tasks", headers=headers, params={"page_size": 1}))
    checks.append((ListContentGenerationTasksResponse, listing, {"total": 3, "items": [TASK_EXAMPLES[SEEDANCE_2_0]]}))
    assert read(httpx.delete(f"{base}/contents/generations/tasks/{listing['items'][0]['id']}", headers=headers)) == {}

    for sdk_type, answer, example in checks:
        assert sdk_problems(sdk_type, answer) == [], answer
        assert example_problems(answer, example) == [], answer
