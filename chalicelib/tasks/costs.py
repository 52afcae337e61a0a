"""What a finished task cost (docs/api.md, "Prices and costs"): Ark's `usage` priced at the model's price as the
task was accepted (`TaskRecord.price`, so a later change of price never changes it), written with the task's
terminal transition, never by a write of its own.

* Images: the price per image times the images Ark generated (`usage.generated_images`, else the images in the
  answer), never the images asked for: a group with per-image failures costs only what Ark made.
* Videos: per million tokens of the status answer's `usage.total_tokens`, or per second of the duration Ark reports
  (`duration`, or `frames` at 24 fps), else the one asked for; half of that on Ark's `flex` tier.
* A task Ark did no billable work for costs 0: one that ended before any call reached Ark, or whose every call Ark
  refused (the tasks that get their quota request back), one Ark refused outright, and a video Ark failed, expired
  or cancelled (Ark bills only what it generated).
* `cost` stays null where arkflow cannot know: no price when the task was accepted, an answer that could not be read
  (it may have been billed), a video ended here while Ark may still make it, and a success whose answer lacks what
  its price counts (no token usage, an auto duration Ark did not report).

`cost` is rounded to 6 places with decimal arithmetic (a float would store 0.30000000000000004), in the price's
currency, stored in `currency` beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from pynamodb.expressions.update import Action

from chalicelib.ark.capabilities import VIDEO_FPS
from chalicelib.store import statemachine
from chalicelib.store.records import TaskRecord

log = logging.getLogger(__name__)

# The units each type of model may be priced in: Ark bills Seedream per image, Seedance per token (some plans per
# second of video).
UNITS_BY_TYPE: dict[str, tuple[str, ...]] = {"image": ("per_image",),
                                             "video": ("per_million_tokens", "per_second")}
FLEX_SHARE = Decimal("0.5")  # what Ark's offline `flex` tier costs of the default one
PLACES = Decimal("0.000001")
# Far beyond any real task (and far inside DynamoDB's numbers): a larger figure comes of an answer that is wrong.
MAX_COST = Decimal(10) ** 12


def _stored_price(task: TaskRecord) -> tuple[str, str, Decimal] | None:
    """(currency, unit, amount) of the price the task was accepted at; None without one (or one not of its shape)."""
    price = task.price
    if not isinstance(price, Mapping) or not isinstance(price.get("currency"), str):
        return None
    units = [unit for unit in UNITS_BY_TYPE.get(task.type, ()) if unit in price]
    if len(units) != 1 or isinstance(price[units[0]], bool) or not isinstance(price[units[0]], int | float):
        return None
    return price["currency"], units[0], Decimal(str(price[units[0]]))


def rounded(amount: Decimal) -> float | None:
    """A cost as stored: 6 places, a float whose shortest form is those places; None for a figure out of bounds."""
    try:
        value = amount.quantize(PLACES, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0 or value > MAX_COST:
        return None
    return float(value)


def _written(task: TaskRecord, usage: Mapping[str, Any] | None, cost: Decimal | None,
             currency: str | None) -> list[Action]:
    """The transition's actions recording `usage` and the cost. Left to `unbilled_end` for a task marked as never
    reaching Ark (one write sets each field once)."""
    actions: list[Action] = [TaskRecord.usage.set(dict(usage))] if usage else []
    if not task.ark_called:
        return actions
    value = None if cost is None else rounded(cost)
    if cost is not None and value is None:
        log.warning("task %s: a cost of %s is out of bounds; none recorded", task.task_id, cost)
    if value is not None and currency is not None:
        actions += [TaskRecord.cost.set(value), TaskRecord.currency.set(currency)]
    return actions


def image_actions(task: TaskRecord, usage: Mapping[str, Any] | None, images_in_answer: int) -> list[Action]:
    """For the end of an image task Ark answered: its usage, and the images Ark generated times the price."""
    price = _stored_price(task)
    if price is None:
        return _written(task, usage, None, None)
    currency, _unit, amount = price
    generated = usage.get("generated_images") if usage else None
    count = generated if isinstance(generated, int) and not isinstance(generated, bool) else images_in_answer
    return _written(task, usage, amount * count, currency)


def video_actions(task: TaskRecord, status: str, usage: Mapping[str, Any] | None, *, duration: int | None,
                  frames: int | None, service_tier: str | None) -> list[Action]:
    """For a video Ark ended (its status answer's `status`, `usage`, reported length and tier): Ark bills a
    succeeded one only."""
    price = _stored_price(task)
    if price is None:
        return _written(task, usage, None, None)
    currency, unit, amount = price
    if status != statemachine.SUCCEEDED:
        return _written(task, usage, Decimal(0), currency)
    if unit == "per_million_tokens":
        tokens = (usage or {}).get("total_tokens")
        units = Decimal(tokens) / 1_000_000 if isinstance(tokens, int) and not isinstance(tokens, bool) else None
    else:
        units = _seconds(task, duration, frames)
    if units is None:
        return _written(task, usage, None, currency)
    tier = service_tier or (task.params or {}).get("service_tier")
    return _written(task, usage, amount * units * (FLEX_SHARE if tier == "flex" else 1), currency)


def _seconds(task: TaskRecord, duration: int | None, frames: int | None) -> Decimal | None:
    """The video's length: as Ark reports it, else as asked; None for an auto length (-1) Ark did not report."""
    params = task.params or {}
    for seconds, count in ((duration, frames), (params.get("duration"), params.get("frames"))):
        if isinstance(seconds, int) and seconds > 0:
            return Decimal(seconds)
        if isinstance(count, int) and count > 0:
            return Decimal(count) / VIDEO_FPS
    return None


def refused_actions(task: TaskRecord, reached_ark_before: bool) -> list[Action]:
    """For a task failed because Ark refused its call outright (a 4xx other than a refusal before any work, which
    `unbilled_end` covers): nothing generated, nothing billed, unless an earlier call may have been."""
    price = _stored_price(task)
    if price is None or reached_ark_before:
        return []
    return _written(task, None, Decimal(0), price[0])


def unbilled_end(task: TaskRecord, target: str, _at: float) -> list[Action]:
    """A state machine write hook: a task that ends with no call Ark worked on (`ark_called` false: never sent, or
    only refused before any work) costs 0, written with its terminal transition."""
    if target not in statemachine.TERMINAL or task.ark_called or (price := _stored_price(task)) is None:
        return []
    return [TaskRecord.cost.set(0), TaskRecord.currency.set(price[0])]
