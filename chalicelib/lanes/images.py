"""The image branch of a lane: one synchronous Ark call per claimed task, its images recorded, their copy kept."""

from __future__ import annotations

import time
from typing import Any

from chalicelib import catalog
from chalicelib.ark.answers import ImageGenerationResult, ImageUsage
from chalicelib.ark.client import VolcImageClient
from chalicelib.ark.errors import ArkInvalidResponseError, ArkPermanentError, ArkRetryableError, task_error
from chalicelib.errors import error_object
from chalicelib.lanes.copies import ResultCopies
from chalicelib.lanes.endings import Endings
from chalicelib.lanes.messages import DONE, Delivery, Outcome
from chalicelib.media import storage
from chalicelib.settings import Settings
from chalicelib.store import statemachine
from chalicelib.store.records import ModelRecord, TaskRecord
from chalicelib.tasks import costs

# With less time than this left after the Ark call, the copy goes to a fresh message instead.
MIN_COPY_TIME_S = 30


class ImageCalls:
    def __init__(self, client: VolcImageClient, *, s3: Any, endings: Endings, copies: ResultCopies,
                 settings: Settings) -> None:
        self.client = client
        self.s3 = s3
        self.endings = endings
        self.copies = copies
        self.settings = settings

    def generate(self, task: TaskRecord, delivery: Delivery, reached_ark_before: bool,
                 model: ModelRecord | None = None) -> Outcome:
        """One call for the claimed task; `model` as the worker read it (a flag of its upstream being unavailable
        is cleared once Ark answers)."""
        params = task.params or {}
        max_images = params.get("max_images")
        refs = storage.urls_for_ark(self.s3, task.images, self.settings)
        try:
            result = self.client.create_image_task(
                task.prompt or "", refs or None, params.get("size"), task.upstream_model,
                sequential_image_generation="auto" if max_images and max_images > 1 else None,
                max_images=max_images if max_images and max_images > 1 else None,
                watermark=params.get("watermark"), output_format=params.get("output_format"),
                tools=params.get("tools"),
            )
        except ArkRetryableError as error:
            return self.endings.retry_later(task, delivery, error, reached_ark_before)
        except (ArkPermanentError, ArkInvalidResponseError) as error:
            # An unreadable answer may have been billed: the task fails rather than calling Ark again.
            self.endings.fail_permanently(task, error, reached_ark_before)
            return DONE
        catalog.clear_upstream_unavailable(model)
        self.endings.circuit.passed(task)  # a probe's success closes the model's circuit
        self._store_images(task, result, delivery)
        return DONE

    def _store_images(self, task: TaskRecord, result: ImageGenerationResult, delivery: Delivery) -> None:
        errors = [{"index": error.index, **task_error(error.code, error.message)} for error in result.errors]
        usage = usage_of(result.usage) if result.usage else None
        # Priced by what Ark generated (its usage), written with the task's end.
        billed = costs.image_actions(task, usage, len(result.images))
        if not result.images:
            first = task_error(result.errors[0].code, result.errors[0].message) if result.errors else error_object(
                "no_images", "Ark returned no image.")
            self.endings.fail_with(task, first, [TaskRecord.image_errors.set(errors), *billed])
            return
        meta: dict[str, Any] = {"sizes": [image.size for image in result.images],
                                "format": (task.params or {}).get("output_format", "jpeg")}
        if usage:
            meta["usage"] = usage
        succeeded = self.endings.transition(task, statemachine.SUCCEEDED, [
            TaskRecord.result_urls.set([image.url for image in result.images if image.url]),
            TaskRecord.image_errors.set(errors),
            TaskRecord.result_meta.set(meta),
            *billed,
        ])
        if not succeeded:
            return
        if delivery.deadline is not None and delivery.deadline - time.monotonic() < MIN_COPY_TIME_S:
            # A long Ark call left too little of this invocation: a fresh message copies with a whole one.
            self.copies.copy_later(succeeded)
            return
        self.copies.keep(succeeded, delivery, whole_invocation=False)


def usage_of(usage: ImageUsage) -> dict[str, Any]:
    """What a task records of an image call's usage: images, tokens, and each tool's count when tools ran."""
    recorded: dict[str, Any] = {"generated_images": usage.generated_images, "output_tokens": usage.output_tokens,
                                "total_tokens": usage.total_tokens}
    if usage.tool_usage is not None:
        recorded["tool_usage"] = usage.tool_usage.model_dump()
    return recorded
