"""Ark's answers as schemas (docs/ark.md, "Answers"): what the clients accept, and what the rest of arkflow reads.

Each answer is validated strictly against its documented shape before anything reads it; one that does not fit
becomes an `ArkInvalidResponseError` (and the client logs what was received). Every string of Ark's that a task
may store is bounded here (URLs, ids, names, sizes; error texts in `ArkErrorBody`), so no answer can grow a task
past DynamoDB's item limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator

from chalicelib.ark.capabilities import MODELS, VIDEO_STATUSES
from chalicelib.ark.errors import ArkErrorBody

MAX_URL_CHARS = 8192
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 256
# Ark's list pages hold at most 500 tasks.
MAX_PAGE_ITEMS = 500
# A group holds at most this many items, images and per-image errors together.
MAX_GROUP_ITEMS = max(entry.image.max_total_images for entry in MODELS if entry.image)

Url = Annotated[str, StringConstraints(max_length=MAX_URL_CHARS, pattern=r"^https?://\S+$")]
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
Count = Annotated[int, Field(ge=0)]
PixelSize = Annotated[str, StringConstraints(pattern=r"^\d{1,5}x\d{1,5}$")]
TaskId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]


class _Answer(BaseModel):
    # Strict: a number sent as a string, or an object sent as a list, is not what Ark documents. Fields Ark adds
    # later are ignored.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


# --- images ----------------------------------------------------------------------------------------------------

class GeneratedImage(_Answer):
    url: Url | None = None
    size: PixelSize
    b64_json: str | None = None

    @model_validator(mode="after")
    def _one_payload(self) -> Self:
        if (self.url is None) == (self.b64_json is None):
            raise ValueError("an image carries exactly one of url and b64_json")
        return self


class FailedImage(_Answer):
    error: ArkErrorBody


class ToolUsage(_Answer):
    """How often each tool ran (`web_search`: searches made; 0 when the model chose not to search)."""

    web_search: Count = 0


class ImageUsage(_Answer):
    generated_images: Count
    output_tokens: Count = 0
    total_tokens: Count = 0
    tool_usage: ToolUsage | None = None


def _image_kind(item: Any) -> str | None:
    if isinstance(item, dict):
        return "failed" if "error" in item else "image"
    return None  # neither: the item is invalid


ImageItem = Annotated[Annotated[GeneratedImage, Tag("image")] | Annotated[FailedImage, Tag("failed")],
                      Discriminator(_image_kind)]


@dataclass(frozen=True)
class ImageError:
    index: int
    code: str
    message: str


@dataclass(frozen=True)
class ImageGenerationResult:
    model: str
    created: int
    images: list[GeneratedImage]
    errors: list[ImageError]
    usage: ImageUsage | None


class ImageGenerationAnswer(_Answer):
    """`POST /images/generations`, not streamed: images and per-image errors in `data` (in request order)."""

    model: Name
    created: int
    data: list[ImageItem] = Field(default_factory=list, max_length=MAX_GROUP_ITEMS)
    usage: ImageUsage | None = None
    # Present when nothing was produced (normally in a non-2xx answer, sometimes in a 200).
    error: ArkErrorBody | None = None

    def result(self) -> ImageGenerationResult:
        return ImageGenerationResult(
            model=self.model,
            created=self.created,
            images=[item for item in self.data if isinstance(item, GeneratedImage)],
            errors=[ImageError(index, item.error.code, item.error.message)
                    for index, item in enumerate(self.data) if isinstance(item, FailedImage)],
            usage=self.usage,
        )


# --- video tasks -----------------------------------------------------------------------------------------------

class VideoTaskCreated(_Answer):
    id: TaskId


class VideoUsage(_Answer):
    completion_tokens: Count
    total_tokens: Count
    tool_usage: ToolUsage | None = None

    @model_validator(mode="before")
    @classmethod
    def _total_defaults_to_completion(cls, data: Any) -> Any:
        if isinstance(data, dict) and "total_tokens" not in data:
            return {**data, "total_tokens": data.get("completion_tokens")}
        return data


class VideoTask(_Answer):
    """One task as `GET /contents/generations/tasks/{id}`, a list page and a callback show it."""

    id: TaskId
    model: Name = ""
    status: Literal[VIDEO_STATUSES]  # type: ignore[valid-type]
    error: ArkErrorBody | None = None
    video_url: Url | None = None
    last_frame_url: Url | None = None
    resolution: Name | None = None
    ratio: Name | None = None
    duration: int | None = None
    frames: int | None = None
    seed: int | None = None
    usage: VideoUsage | None = None
    # Reconciling matches on it: a task without it cannot be told from another.
    created_at: int
    updated_at: int = 0
    # Echoed from the create; None when Ark does not echo it (reconciling then counts it as no match).
    safety_identifier: Name | None = None
    execution_expires_after: int | None = None
    # What the model says it made (echoed by the models that have them): sound in the video, a draft (and the
    # draft a render came from), the queue priority and tier it ran at.
    generate_audio: bool | None = None
    draft: bool | None = None
    draft_task_id: TaskId | None = None
    priority: int | None = None
    service_tier: Name | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_content(cls, data: Any) -> Any:
        """Ark nests the result URLs in `content`; arkflow reads them as the task's own fields."""
        if not isinstance(data, dict) or "content" not in data:
            return data
        fields = {key: value for key, value in data.items() if key != "content"}
        content = data["content"]
        if content is None:
            return fields
        if not isinstance(content, dict):
            raise ValueError("content must be an object")
        return {**fields, "video_url": content.get("video_url"), "last_frame_url": content.get("last_frame_url")}

    @classmethod
    def from_wire(cls, body: Any) -> VideoTask:
        return cls.model_validate(body)


class VideoTaskPage(_Answer):
    items: list[VideoTask] = Field(max_length=MAX_PAGE_ITEMS)
    total: Count


class VideoTaskDeleted(_Answer):
    """`DELETE /contents/generations/tasks/{id}` answers an empty object."""
