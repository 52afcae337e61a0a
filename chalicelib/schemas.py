"""Input schemas of the REST API and `parse`, which turns any invalid input into one 400 listing every bad field.

Bodies are strict JSON: nothing is coerced ("5" is not an int, 1 is not a bool) and unknown fields are rejected,
so a client can never set server-owned fields such as `status` or `user_id`. Query strings arrive as text, so
the query schemas coerce. Error paths use the API's own naming (`images[1]`, `params.duration`, "" for the
body itself) and messages never echo input values: those may be megabytes of base64 or a password.

Rules that relate two fields (reference images + max_images, an adaptive ratio without a first frame, ...)
can only be judged once both fields are valid, so they are reported after the per-field problems are fixed.

Input images are read by `chalicelib.media.references`; identifiers' formats are `chalicelib.ids`'.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

import iso4217
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from chalicelib.ark import capabilities as table
from chalicelib.ark.capabilities import ArkModel
from chalicelib.errors import ValidationFailed
from chalicelib.ids import MODEL_ID_PATTERN, TASK_ID_PATTERN, USER_ID_PATTERN, USERNAME_PATTERN
from chalicelib.media.inspection import frame_image_problem, reference_image_problem
from chalicelib.media.references import (
    ASSET_URL,
    BadReference,
    ImageProblem,
    ImageRef,
    https_url,
    image_ref,
    media_url,
)
from chalicelib.resources import LANES, TaskType
from chalicelib.tasks import checks
from chalicelib.webhooks import addresses
from chalicelib.webhooks.events import WebhookEvent

Schema = TypeVar("Schema", bound=BaseModel)

# Ark's task ids and statuses are short words: anything longer is no callback of Ark's.
ARK_CALLBACK_MAX_FIELD_CHARS = 128
UNKNOWN_FIELD_MESSAGE = "is not an accepted field here (unknown, set by the server, or not changeable)"


def _problem(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _raise_problems(title: str, problems: list[tuple[tuple[str | int, ...], str, str]]) -> None:
    """Report several cross-field problems at once, each at its own path (relative to the model)."""
    if problems:
        raise ValidationError.from_exception_data(
            title,
            [InitErrorDetails(type=_problem(kind, message), loc=loc, input=None) for loc, kind, message in problems],
        )


def _not_null(value: Any) -> Any:
    """For partial updates: a field may be left out, but null is not a value it can take."""
    if value is None:
        raise _problem("not_null", "cannot be null")
    return value


# --- Images ------------------------------------------------------------------------------------------------


def _reported(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A reader of `chalicelib.media.references` whose `BadReference` becomes a problem at the field's path."""

    def validate(value: Any) -> Any:
        try:
            return read(value)
        except BadReference as bad:
            raise _problem(bad.kind, bad.message) from None

    return validate


def _image_ref_of(image_problem: ImageProblem) -> Callable[[Any], Any]:
    return _reported(lambda value: image_ref(value, image_problem))


# Only https: the API presigns `s3://` references, so one here would hand out any object of any bucket.
_result_url = _reported(lambda value: https_url(value, "result_url", "must be an https URL with a host"))


# How the API's document shows an image reference (the validators read it; the schema only says its forms).
_IMAGE_REF_SCHEMA = Field(json_schema_extra={
    "type": "string",
    "description": "an https URL, an inline image `data:image/<format>;base64,<data>`, or `upload:<upload_id>`",
})
ReferenceImage = Annotated[ImageRef, PlainValidator(_image_ref_of(reference_image_problem), json_schema_input_type=str),
                           _IMAGE_REF_SCHEMA]
FrameImage = Annotated[ImageRef, PlainValidator(_image_ref_of(frame_image_problem), json_schema_input_type=str),
                       _IMAGE_REF_SCHEMA]


# Every preset of any model: which of them a model takes is judged against its capabilities.
_ALL_PRESETS = tuple(dict.fromkeys(preset for entry in table.MODELS if entry.image
                                   for preset in entry.image.size_presets))


def _image_size(value: str) -> str:
    """A size in its normal spelling (`2K`, `2048x2048`); whether the model takes it is `checks`' to say."""
    if value.upper() in _ALL_PRESETS:
        return value.upper()
    # isascii: str.isdigit also accepts digits int() cannot read, such as superscripts.
    dimensions = table.parse_pixel_size(value) if value.isascii() else None
    if dimensions is None:
        raise _problem("image_size", f"must be a preset ({', '.join(_ALL_PRESETS)}) or WxH such as 2048x2048")
    return "{}x{}".format(*dimensions)


def _not_adaptive(value: str) -> str:
    if value == "adaptive":
        raise _problem("ratio_adaptive", "adaptive follows each request's first frame and cannot be a default")
    return value


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# --- Request caps ------------------------------------------------------------------------------------------

# Clients' keys (UUIDs, order numbers) fit easily; with the owner's id the item key stays far under DynamoDB's.
MAX_IDEMPOTENCY_KEY_CHARS = 255
# No request body nests more than 4 levels; the cap stops a body of brackets before the decoder recurses.
MAX_JSON_DEPTH = 32

_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]+")  # printable ASCII, as HTTP header values are
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")
_NESTING = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(raw: bytes) -> int:
    """How deep the JSON text's arrays and objects nest, measured without decoding it (brackets in strings
    do not count). Linear, in C for the most part: a 6 MB body takes milliseconds."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET)
    return max(itertools.accumulate(map(_NESTING.__getitem__, brackets)), default=0)


# The header as the API's document shows it (`idempotency_key` reads it).
IdempotencyKeyHeader = Annotated[
    str, StringConstraints(max_length=MAX_IDEMPOTENCY_KEY_CHARS, pattern=r"^[\x20-\x7e]*$"),
    Field(description="makes a retried create safe: the same key and body within 24 h answer as the first did"),
]


def idempotency_key(value: str | None) -> str | None:
    """The `Idempotency-Key` header as used (None when absent or blank); 400 when too long or not printable."""
    if value is None or not value.strip():
        return None
    key = value.strip()
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationFailed("1 invalid field(s)", details=[{
            "field": "Idempotency-Key",
            "message": f"must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
            "type": "idempotency_key",
        }])
    return key


# --- Field types -------------------------------------------------------------------------------------------

ModelSlug = Annotated[str, StringConstraints(pattern=MODEL_ID_PATTERN)]
# Ark Model IDs (`doubao-seedream-4-5-251128`) and endpoint IDs (`ep-20250101123456-abcde`).
UpstreamModel = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{1,127}$")]
Family = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Prompt = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=table.PROMPT_MAX_CHARS)]
ImageSize = Annotated[str, StringConstraints(max_length=16), AfterValidator(_image_size)]
# Whether a value suits the model is `checks`' to say; these only bound what any model could take.
MaxImages = Annotated[int, Field(ge=1)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=32)]
# Usernames are case-insensitive: stored and compared in lower case. (A validator before the pattern keeps pydantic
# from putting it in the JSON schema: the API's document is told it here.)
Username = Annotated[str, BeforeValidator(_lower), StringConstraints(pattern=USERNAME_PATTERN), WithJsonSchema(
    {"type": "string", "pattern": "^[A-Za-z0-9_.-]{3,64}$", "description": "case-insensitive"})]
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
Role = Literal["user", "admin"]
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=256)]
# Task creations a user may make per minute (`chalicelib.store.rate_limit`).
RequestsPerMinute = Annotated[int, Field(ge=1, le=10_000)]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Concurrency = Annotated[int, Field(ge=1, le=1000)]
Quota = Annotated[int, Field(ge=0)]
MaxRunningPerUser = Annotated[int, Field(ge=1)]
LaneName = Literal[tuple(lane.name for lane in LANES)]
# The platform's task states are Ark's video task states.
TaskStatus = Literal[table.VIDEO_STATUSES]
ResultUrl = Annotated[str, AfterValidator(_result_url)]
UploadContentType = Literal[tuple(f"image/{image_format}" for image_format in table.SEEDREAM_INPUT_IMAGES.formats)]
_MOST_REFERENCE_IMAGES = max(entry.image.max_references for entry in table.MODELS if entry.image)
_MOST_REFERENCES = max(refs.images.maximum + refs.videos + refs.audios for entry in table.MODELS
                       if entry.video and (refs := entry.video.references))
_MOST_IMAGES = max(entry.image.max_images or 1 for entry in table.MODELS if entry.image)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_null_where_refused(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The JSON schema of a partial update: at least one field; its `NOT_NULL` fields may be left out, but null is
    refused (`_not_null`), which their `X | None` type alone would not tell the API's document."""
    schema["minProperties"] = 1  # `_changes_something`
    for name in getattr(model, "NOT_NULL", ()):
        field_schema = schema["properties"][name]
        branches = [branch for branch in field_schema.pop("anyOf") if branch != {"type": "null"}]
        field_schema.pop("default", None)
        field_schema.update(branches[0] if len(branches) == 1 else {"anyOf": branches})


class _Update(_Body):
    """A partial update: the fields left out stay as they are; those of `NOT_NULL` may not be set to null."""

    model_config = ConfigDict(json_schema_extra=_no_null_where_refused)
    NOT_NULL: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise _problem("empty_update", "give at least one field to change")
        return self


# --- Tasks -------------------------------------------------------------------------------------------------


def _ark_model(info: ValidationInfo) -> ArkModel | None:
    """The table's model the request is judged against (`parse_task_request`'s context), if known."""
    return (info.context or {}).get("ark_model")


def _report(title: str, problems: list[checks.Problem]) -> None:
    _raise_problems(title, [(_loc(problem.field), problem.type, problem.message) for problem in problems])


def _loc(path: str) -> tuple[str | int, ...]:
    """`references[2].url` -> ("references", 2, "url")."""
    loc: list[str | int] = []
    for part in path.split("."):
        name, _, indexes = part.partition("[")
        loc.append(name)
        loc += [int(index) for index in indexes.replace("]", "").split("[") if index]
    return tuple(loc)


def _webhook_url(value: str, info: ValidationInfo) -> str:
    """Where a task's webhooks go; loopback receivers only where the deployment allows them (the local stack)."""
    problem = addresses.url_problem(value, allow_loopback=bool((info.context or {}).get("webhook_loopback")))
    if problem is not None:
        raise _problem("webhook_url", problem)
    return value


def _unique(values: list[str]) -> list[str]:
    if not values:
        raise _problem("webhook_events", "give at least one event, or leave the field out for the default ones")
    return list(dict.fromkeys(values))


WebhookUrl = Annotated[str, StringConstraints(max_length=addresses.MAX_URL_CHARS), AfterValidator(_webhook_url)]
WebhookEvents = Annotated[list[WebhookEvent], Field(max_length=16), AfterValidator(_unique)]


class _TaskWebhook(_Body):
    """A task's webhook (docs/api.md, "Webhooks"): its URL, and the statuses posted to it (by default the final
    ones)."""

    webhook_url: WebhookUrl | None = None
    webhook_events: WebhookEvents | None = None

    @model_validator(mode="after")
    def _events_need_a_url(self) -> Self:
        if self.webhook_events is not None and self.webhook_url is None:
            raise _problem("webhook_events", "webhook_events needs a webhook_url")
        return self


class ImageTool(_Body):
    type: Word


class ImageTaskRequest(_TaskWebhook):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "image", "model_id": "seedream-4.5", "prompt": "a red fox in snow", "size": "2K"}]})

    type: Literal["image"]
    model_id: ModelSlug
    prompt: Prompt
    images: list[ReferenceImage] = Field(default_factory=list, max_length=_MOST_REFERENCE_IMAGES)
    size: ImageSize | None = None
    max_images: MaxImages | None = None
    watermark: bool | None = None
    output_format: Word | None = None
    tools: list[ImageTool] | None = Field(default=None, max_length=4)

    def fields(self) -> dict[str, Any]:
        """The generation fields given (None for those left out), as `checks` and Ark read them."""
        return {"size": self.size, "max_images": self.max_images, "watermark": self.watermark,
                "output_format": self.output_format,
                "tools": [tool.type for tool in self.tools] if self.tools is not None else None}

    @model_validator(mode="after")
    def _fits_the_model(self, info: ValidationInfo) -> Self:
        model = _ark_model(info)
        if model is not None and model.image is not None:
            _report("ImageTaskRequest", checks.image_problems(model, references=len(self.images),
                                                              fields=self.fields()))
        return self


class VideoParams(_Body):
    resolution: Word | None = None
    ratio: Word | None = None
    duration: int | None = None
    frames: int | None = None
    seed: int | None = None
    camera_fixed: bool | None = None
    watermark: bool | None = None
    return_last_frame: bool | None = None
    generate_audio: bool | None = None
    draft: bool | None = None
    priority: int | None = None
    service_tier: Word | None = None
    execution_expires_after: int | None = None
    output_format: Word | None = None


def _reference_url(value: Any, info: ValidationInfo) -> Any:
    """An image reference is read like a frame (URL, inline data or upload) or names an asset of the account's media
    library (how Ark takes a trusted portrait); video and audio are URLs or assets."""
    kind = info.data.get("type")
    try:
        if kind == "image":
            if isinstance(value, str) and ASSET_URL.fullmatch(value):
                return value
            return image_ref(value, frame_image_problem)
        return media_url(value)
    except BadReference as bad:
        raise _problem(bad.kind, bad.message) from None


class Reference(_Body):
    """One item of reference mode: an image, a video or an audio clip the model draws on."""

    type: Literal["image", "video", "audio"]
    url: Annotated[ImageRef | str, PlainValidator(_reference_url, json_schema_input_type=str), Field(
        description="an image like a frame, or `asset://<id>` of the account's media library; a video or audio clip "
                    "as an https URL or `asset://<id>`")]


class VideoTaskRequest(_TaskWebhook):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "waves at dusk",
         "params": {"resolution": "720p", "ratio": "16:9", "duration": 5}}]})

    type: Literal["video"]
    model_id: ModelSlug
    prompt: Annotated[Prompt | None, BeforeValidator(_blank_to_none)] = None
    # images[0] is the first frame, images[1] the optional last frame.
    images: list[FrameImage] = Field(default_factory=list, max_length=2)
    references: list[Reference] = Field(default_factory=list, max_length=_MOST_REFERENCES)
    params: VideoParams = Field(default_factory=VideoParams)

    @model_validator(mode="after")
    def _fits_the_model(self, info: ValidationInfo) -> Self:
        model = _ark_model(info)
        if model is not None and model.video is not None:
            _report("VideoTaskRequest", checks.video_problems(
                model, prompt=self.prompt is not None, frames=len(self.images),
                references=[reference.type for reference in self.references],
                params=self.params.model_dump()))
        return self


class RenderParams(_Body):
    """What a render may set (`POST /api/tasks/{id}/render`); Ark reuses the rest from the draft."""

    resolution: Word | None = None
    watermark: bool | None = None
    return_last_frame: bool | None = None
    service_tier: Word | None = None
    execution_expires_after: int | None = None


class RenderRequest(_TaskWebhook):
    params: RenderParams = Field(default_factory=RenderParams)

    @model_validator(mode="after")
    def _fits_the_model(self, info: ValidationInfo) -> Self:
        model = _ark_model(info)
        if model is not None and model.video is not None:
            _report("RenderRequest", checks.video_problems(model, prompt=True, frames=0, references=[],
                                                           params=self.params.model_dump(), inputs=False))
        return self


TASK_SCHEMAS: dict[str, type[ImageTaskRequest] | type[VideoTaskRequest]] = {
    "image": ImageTaskRequest,
    "video": VideoTaskRequest,
}
# `POST /api/tasks`'s body as the API's document shows it: `parse_task_request` picks the schema by `type`.
TaskRequest = Annotated[ImageTaskRequest | VideoTaskRequest, Field(discriminator="type")]


class TaskListQuery(_Query):
    status: TaskStatus | None = None
    type: TaskType | None = None
    model_id: ModelSlug | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None


class AdminTaskListQuery(TaskListQuery):
    user: Username | None = None  # the account that holds this name now
    user_id: UserId | None = None  # any account, a deleted one included


class OperatorError(_Body):
    """The error an operator sets on a task it fails (`PUT /api/tasks/{id}/status`)."""

    code: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    message: Annotated[str, StringConstraints(max_length=4096)]


# What an operator may set with each target status: exactly what a task in that status carries (a task sent back
# to the queue, cancelled or started carries neither results nor an error).
STATUS_FIELDS: dict[str, frozenset[str]] = {
    "succeeded": frozenset({"result_urls", "video_url", "last_frame_url"}),
    "failed": frozenset({"error"}),
    "expired": frozenset({"error"}),
}


class StatusUpdateRequest(_Body):
    status: TaskStatus
    error: OperatorError | None = None
    result_urls: list[ResultUrl] | None = Field(default=None, max_length=_MOST_IMAGES)
    video_url: ResultUrl | None = None
    last_frame_url: ResultUrl | None = None

    @model_validator(mode="after")
    def _fields_fit_the_status(self) -> Self:
        allowed = STATUS_FIELDS.get(self.status, frozenset())
        _raise_problems("StatusUpdateRequest", [
            ((name,), "not_carried", f"a {self.status} task carries no {name}")
            for name in self.carried() if name not in allowed
        ])
        return self

    def carried(self) -> list[str]:
        """The fields given besides the status (null counts as not given)."""
        return [name for name in type(self).model_fields if name != "status" and getattr(self, name) is not None]


class ArkCallback(BaseModel):
    """Ark's status push (`POST /api/queue/callback`): its task object, of which only `id` and `status` are read
    (the callback is a hint: a status read decides). Ark's other fields, present or added later, are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=ARK_CALLBACK_MAX_FIELD_CHARS)]
    status: Annotated[str, StringConstraints(min_length=1, max_length=ARK_CALLBACK_MAX_FIELD_CHARS)]


class CallbackQuery(BaseModel):
    """The query string of the callback URL arkflow gives Ark: the task and its secret (`token`)."""

    model_config = ConfigDict(extra="ignore")

    task_id: Annotated[str, StringConstraints(max_length=ARK_CALLBACK_MAX_FIELD_CHARS)] = ""
    token: Annotated[str, StringConstraints(max_length=ARK_CALLBACK_MAX_FIELD_CHARS)] = ""


class WebhookDeliveriesQuery(_Query):
    """`GET /api/webhooks/deliveries?task_id=`."""

    task_id: Annotated[str, StringConstraints(pattern=TASK_ID_PATTERN)]


class MetricsQuery(_Query):
    """`GET /api/admin/metrics?window=`."""

    window: Literal["1h", "24h"] = "1h"


# Usage rows a page holds by default and at most: a row is under 400 bytes of JSON with one currency and some 35 more
# for each other one its model's price named that day (tests/metrics checks it), so a page stays under Lambda's 6 MB
# answer up to some 80 currencies a row.
USAGE_PAGE = 500
USAGE_PAGE_MAX = 1000


class UsageQuery(_Query):
    """`GET /api/admin/usage?days=&cursor=&limit=`: days back from today (in `QUOTA_TIMEZONE`), today included, a
    page of rows at a time."""

    days: int = Field(default=14, ge=1, le=31)
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    limit: int = Field(default=USAGE_PAGE, ge=1, le=USAGE_PAGE_MAX)


# --- Steering (admin): the audit trail and dead letters ------------------------------------------------------


class AuditQuery(_Query):
    """`GET /api/admin/audit`: entries newest first, of one actor (a user name, or `system`) and/or one target
    (`model:<id>`, `user:<name>`, `task:<id>`, `dlq:<queue>`)."""

    actor: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    # An index key: DynamoDB takes 2,048 bytes at most.
    target: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    limit: int = Field(default=50, ge=1, le=100)


class DeadLetterReplay(_Body):
    """`POST /api/admin/dlq/{lane}/replay`: these messages only (without it: every one, as many as a call takes)."""

    message_ids: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None = Field(
        default=None, min_length=1, max_length=100)


class UploadRequest(_Body):
    content_type: UploadContentType
    size: Annotated[int, Field(ge=1, le=table.SEEDANCE_INPUT_IMAGES.max_bytes)]


# --- Models (admin) ----------------------------------------------------------------------------------------


class ImageModelDefaults(_Body):
    size: ImageSize | None = None
    watermark: bool | None = None
    max_images: MaxImages | None = None
    output_format: Word | None = None


class VideoModelDefaults(_Body):
    resolution: Word | None = None
    ratio: Annotated[Word, AfterValidator(_not_adaptive)] | None = None
    duration: int | None = None
    watermark: bool | None = None
    return_last_frame: bool | None = None
    generate_audio: bool | None = None
    service_tier: Word | None = None


# ISO 4217's codes of real currencies: "XXX" (no currency) and "XTS" (testing) name none.
CURRENCY_CODES = frozenset(currency.code for currency in iso4217.Currency) - {"XXX", "XTS"}
# No model costs more than this per unit (an image, a million tokens, a second): a larger figure is a typo.
MAX_PRICE = 1_000_000
PRICE_UNITS = ("per_image", "per_million_tokens", "per_second")


def _currency_code(value: str) -> str:
    if value not in CURRENCY_CODES:
        raise _problem("unknown_currency", "must be an ISO 4217 currency code in upper case, e.g. CNY or USD")
    return value


CurrencyCode = Annotated[str, AfterValidator(_currency_code),
                         WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$",
                                         "description": "an ISO 4217 currency code"})]
PriceAmount = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]


def _one_price_unit(schema: dict[str, Any]) -> None:
    """The document's view: exactly one amount, never null (`_amounts_not_null`)."""
    for unit in PRICE_UNITS:
        amount = schema["properties"][unit]
        amount.update(next(branch for branch in amount.pop("anyOf") if branch != {"type": "null"}))
        amount.pop("default", None)
    schema["oneOf"] = [{"required": ["currency", unit]} for unit in PRICE_UNITS]


class ModelPrice(_Body):
    """What a model costs (docs/api.md, "Prices and costs"): one amount, per image (image models) or per million
    tokens or second of video (video models), as Ark bills them."""

    model_config = ConfigDict(json_schema_extra=_one_price_unit)

    currency: CurrencyCode
    per_image: PriceAmount | None = None
    per_million_tokens: PriceAmount | None = None
    per_second: PriceAmount | None = None

    _amounts_not_null = field_validator(*PRICE_UNITS, mode="before")(_not_null)

    @model_validator(mode="after")
    def _one_unit(self) -> Self:
        if len(self.stored()) != 2:
            raise _problem("price_unit", f"give exactly one of {', '.join(PRICE_UNITS)} besides currency")
        return self

    @property
    def unit(self) -> str:
        return next(unit for unit in PRICE_UNITS if getattr(self, unit) is not None)

    def stored(self) -> dict[str, Any]:
        """The price as a model stores and shows it: `{"currency": ..., <unit>: amount}`."""
        return self.model_dump(exclude_none=True)


MODEL_DEFAULTS: dict[str, type[ImageModelDefaults] | type[VideoModelDefaults]] = {
    "image": ImageModelDefaults,
    "video": VideoModelDefaults,
}
VIDEO_ONLY_DEFAULTS = frozenset(VideoModelDefaults.model_fields) - frozenset(ImageModelDefaults.model_fields)


class ModelCreate(_Body):
    model_id: ModelSlug
    type: TaskType
    upstream_model: UpstreamModel
    # The table's model an `ep-...` endpoint serves (a table key or any of its Ark ids); found from
    # `upstream_model` otherwise (`chalicelib.catalog.resolve_upstream`).
    family: Family | None = None
    display_name: DisplayName | None = None  # set to model_id when not given
    concurrency: Concurrency
    daily_quota: Quota
    user_daily_quota: Quota | None = None
    max_running_per_user: MaxRunningPerUser | None = None
    lane: LaneName | None = None
    enabled: bool = True
    defaults: ImageModelDefaults | VideoModelDefaults | None = None
    price: ModelPrice | None = None  # which units a model's type takes is judged by `chalicelib.catalog`

    @field_validator("defaults", mode="before")
    @classmethod
    def _defaults_of_type(cls, raw: Any, info: ValidationInfo) -> ImageModelDefaults | VideoModelDefaults | None:
        schema = MODEL_DEFAULTS.get(info.data.get("type", ""))
        # Without a valid `type` (reported on its own) the defaults cannot be judged.
        return schema.model_validate(raw) if schema and raw is not None else None

    @model_validator(mode="after")
    def _display_name_defaults_to_model_id(self) -> Self:
        if self.display_name is None:
            self.display_name = self.model_id
        return self


class ModelUpdate(_Update):
    """Partial update; `model_id` and `type` cannot change.

    The stored model's type is not known here, so the keys of `defaults` pick its schema (video-only keys mean
    video defaults); whoever applies the update checks `isinstance(defaults, MODEL_DEFAULTS[model.type])`, as
    it checks the lane against the type.
    """

    upstream_model: UpstreamModel | None = None
    family: Family | None = None
    display_name: DisplayName | None = None
    concurrency: Concurrency | None = None
    daily_quota: Quota | None = None
    user_daily_quota: Quota | None = None  # null removes the per-user quota
    max_running_per_user: MaxRunningPerUser | None = None  # null removes the limit
    lane: LaneName | None = None  # null returns the model to its type's default lane
    enabled: bool | None = None
    defaults: ImageModelDefaults | VideoModelDefaults | None = None  # null clears the defaults
    price: ModelPrice | None = None  # null removes the price: tasks accepted from then on have no cost
    # With a new upstream: fail the queued tasks it cannot take (their quota given back) instead of refusing.
    force: bool | None = None

    NOT_NULL = ("upstream_model", "family", "display_name", "concurrency", "daily_quota", "enabled", "force")
    _required_values = field_validator(*NOT_NULL, mode="before")(_not_null)

    @field_validator("defaults", mode="before")
    @classmethod
    def _defaults_by_keys(cls, raw: Any) -> ImageModelDefaults | VideoModelDefaults | None:
        if raw is None:
            return None
        video = isinstance(raw, Mapping) and not VIDEO_ONLY_DEFAULTS.isdisjoint(raw)
        return (VideoModelDefaults if video else ImageModelDefaults).model_validate(raw)


# --- Users -------------------------------------------------------------------------------------------------


class LoginRequest(_Body):
    username: Username
    # repr=False keeps passwords out of logged reprs.
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(repr=False)


class UserCreate(_Body):
    username: Username
    password: NewPassword = Field(repr=False)
    role: Role = "user"
    disabled: bool = False
    requests_per_minute: RequestsPerMinute | None = None  # None: the default


class UserUpdate(_Update):
    role: Role | None = None
    disabled: bool | None = None
    password: NewPassword | None = Field(default=None, repr=False)
    requests_per_minute: RequestsPerMinute | None = None  # null: back to the default

    NOT_NULL = ("role", "disabled", "password")
    _required_values = field_validator(*NOT_NULL, mode="before")(_not_null)


# --- API keys: requests and answers --------------------------------------------------------------------

# What a key may do (`chalicelib.accounts.keys`); `tasks:write` implies `tasks:read`.
Scope = Literal["tasks:read", "tasks:write"]
ALL_SCOPES: tuple[Scope, ...] = ("tasks:read", "tasks:write")
# A label its owner gives the key: printable, shown back in listings.
def _printable(value: str) -> str:
    # Unicode's printable characters: no C0/C1 control, no format character (bidi overrides, which make a listing
    # show "a\u202egpj.exe" as "aexe.jpg"; zero-width ones, which make a name look blank), no line separator.
    if not value.isprintable():
        raise _problem("string_pattern_mismatch", "must be printable characters only (no control, format or "
                                                  "separator characters)")
    return value


KeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                                           pattern=r"^[^\x00-\x1f\x7f]+$"), AfterValidator(_printable)]


class KeyCreate(_Body):
    """`POST /api/keys`."""

    name: KeyName
    scopes: list[Scope] = Field(default_factory=lambda: list(ALL_SCOPES), min_length=1, max_length=8)
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None  # None: the key never expires

    @field_validator("scopes")
    @classmethod
    def _each_once(cls, scopes: list[Scope]) -> list[Scope]:
        return sorted(set(scopes))


class KeyListed(BaseModel):
    """A key as its owner's listing shows it: never the key, nor its hash."""

    id: str
    name: str
    scopes: list[Scope]
    prefix: str
    created_at: str
    last_used_at: str | None
    expires_at: str | None


class KeyList(BaseModel):
    """`GET /api/keys`."""

    keys: list[KeyListed]


class KeyCreated(BaseModel):
    """`POST /api/keys` (201): the only answer that ever holds the key."""

    id: str
    key: str
    name: str
    scopes: list[Scope]
    created_at: str
    expires_at: str | None


class KeyDeleted(BaseModel):
    """`DELETE /api/keys/{key_id}`."""

    deleted: str


# --- Parsing -----------------------------------------------------------------------------------------------


def parse_task_request(
    data: Any, ark_model_of: Callable[[str], ArkModel | None], *, webhook_loopback: bool = False,
) -> ImageTaskRequest | VideoTaskRequest:
    """`POST /api/tasks`: the schema is chosen by `type`, and the request judged against the capabilities of its
    model (`ark_model_of(model_id)`; None for a model that does not exist, which the caller answers).
    `webhook_loopback`: the deployment lets webhooks reach this machine (`Settings.webhook_allow_loopback`)."""
    if not isinstance(data, Mapping):
        raise _not_an_object()
    task_type = data.get("type")
    schema = TASK_SCHEMAS.get(task_type) if isinstance(task_type, str) else None
    if schema is None:
        raise ValidationFailed("1 invalid field(s)", details=[
            {"field": "type", "message": f"must be one of {', '.join(TASK_SCHEMAS)}", "type": "task_type"},
        ])
    model_id = data.get("model_id")
    ark_model = ark_model_of(model_id) if isinstance(model_id, str) and re.fullmatch(MODEL_ID_PATTERN, model_id) \
        else None
    return parse(schema, data, context={"ark_model": ark_model, "webhook_loopback": webhook_loopback})


def parse(schema: type[Schema], data: Any, context: dict[str, Any] | None = None) -> Schema:
    """Validate a JSON-decoded body or a query-string dict; ValidationFailed lists every bad field."""
    if not isinstance(data, Mapping):
        raise _not_an_object()
    try:
        return schema.model_validate(dict(data), context=context)
    except ValidationError as error:
        details = [
            {
                "field": _field_path(problem["loc"]),
                "message": UNKNOWN_FIELD_MESSAGE if problem["type"] == "extra_forbidden" else problem["msg"],
                "type": problem["type"],
            }
            for problem in error.errors(include_url=False, include_context=False, include_input=False)
        ]
        # `from None`: the pydantic error's text quotes input values, which must not reach logs.
        raise ValidationFailed(f"{len(details)} invalid field(s)", details=details) from None


def problems_failure(problems: list[checks.Problem]) -> ValidationFailed:
    """The 400 for problems found outside a schema (a model's defaults, its queued tasks)."""
    return ValidationFailed(f"{len(problems)} invalid field(s)", details=[problem.detail() for problem in problems])


def _not_an_object() -> ValidationFailed:
    return ValidationFailed("request body must be a JSON object", details=[
        {"field": "", "message": "must be a JSON object", "type": "object_type"},
    ])


def _field_path(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path
