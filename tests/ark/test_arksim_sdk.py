"""The official Ark SDK (volcengine-python-sdk[ark]) works unchanged against the simulator's base URL."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime._exceptions import (
    ArkAuthenticationError,
    ArkBadRequestError,
    ArkNotFoundError,
    ArkRateLimitError,
)
from volcenginesdkarkruntime.types.images.images import SequentialImageGenerationOptions

from tests.polling import wait_for

from .conftest import API_KEY, IMAGE_MODEL, VIDEO_MODEL


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
