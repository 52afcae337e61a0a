"""Prices and costs: a model's admin-set price, and each finished task's `usage` and `cost` as Ark's answers make them
(docs/api.md, "Prices and costs")."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from chalicelib.store.records import TaskRecord
from chalicelib.tasks import costs
from tests.api_client import Api
from tests.factories import ADMIN, DEMO, IMAGE_MODEL, IMAGE_TASK, VIDEO_MODEL
from tests.factories import SHORT_VIDEO_TASK as VIDEO_TASK
from tests.lane_fixtures import Lanes
from tests.polling import wait_for


def priced(lanes: Lanes, model_id: str, **price: Any) -> None:
    lanes.set_model(model_id, price={"currency": "CNY", **price})


def test_an_image_group_costs_the_price_of_each_image_ark_generated_not_of_those_asked_for(lanes: Lanes) -> None:
    """The simulator's output moderation fails the second group's first image: Ark bills the two it made."""
    priced(lanes, IMAGE_MODEL, per_image=0.1)
    whole = lanes.submit({**IMAGE_TASK, "prompt": "three views of a red fox", "max_images": 3})
    partial = lanes.submit({**IMAGE_TASK, "prompt": "three views of a fox SIM_SENSITIVE_OUTPUT", "max_images": 3})
    lanes.run("image")

    body = lanes.get(whole)
    assert body["status"] == "succeeded" and len(body["result_urls"]) == 3
    width, height = (int(side) for side in body["result"]["sizes"][0].split("x"))
    tokens = 3 * width * height // 256
    assert body["usage"] == {"generated_images": 3, "output_tokens": tokens, "total_tokens": tokens}
    # Decimal arithmetic: 3 × 0.1 in floats would be 0.30000000000000004.
    assert (body["cost"], body["currency"]) == (0.3, "CNY")
    body = lanes.get(partial)
    assert body["status"] == "succeeded" and len(body["result_urls"]) == 2 and len(body["image_errors"]) == 1
    assert body["usage"]["generated_images"] == 2 and (body["cost"], body["currency"]) == (0.2, "CNY")


def test_a_video_costs_its_tokens_or_the_seconds_ark_reports(lanes: Lanes) -> None:
    """Each task is priced as its model was when it was accepted: one per million tokens, three per second."""
    lanes.set_model(VIDEO_MODEL, concurrency=4)
    priced(lanes, VIDEO_MODEL, per_million_tokens=15.0)
    by_tokens = lanes.submit(VIDEO_TASK)
    priced(lanes, VIDEO_MODEL, per_second=0.5)
    by_seconds = {lanes.submit({**VIDEO_TASK, "params": params}): cost for params, cost in (
        ({"duration": 2}, 1.0),
        ({"frames": 57}, 1.1875),  # 57 frames at 24 fps: 2.375 s
        ({"duration": 2, "service_tier": "flex"}, 0.5),  # Ark's offline tier bills half
    )}
    assert lanes.run("video") == {"batchItemFailures": []}
    ark_tasks = lanes.ark.sim.tasks.tasks
    for task_id in (by_tokens, *by_seconds):
        external_id = lanes.task(task_id).external_id
        wait_for(lambda external_id=external_id: ark_tasks[external_id].status == "succeeded")
    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    assert lanes.video().poll_due(budget_s=10) == 4

    body = lanes.get(by_tokens)
    tokens = body["usage"]["total_tokens"]
    assert tokens == 1920 * 1088 * 2 * 24 // 1024  # 1080p 16:9, 2 s (docs/ark.md, "Frames and tokens")
    assert body["usage"] == {"completion_tokens": tokens, "total_tokens": tokens}
    assert (body["cost"], body["currency"]) == (round(tokens * 15 / 1_000_000, 6), "CNY")
    assert {task_id: lanes.get(task_id)["cost"] for task_id in by_seconds} == by_seconds


def test_a_price_change_leaves_finished_and_accepted_tasks_at_the_price_they_were_accepted_at(lanes: Lanes) -> None:
    priced(lanes, IMAGE_MODEL, per_image=0.25)
    finished = lanes.submit(IMAGE_TASK)
    lanes.run("image")
    waiting = lanes.submit(IMAGE_TASK)
    lanes.set_model(IMAGE_MODEL, price={"currency": "USD", "per_image": 9})
    lanes.run("image")
    after = lanes.submit(IMAGE_TASK)
    lanes.set_model(IMAGE_MODEL, price=None)
    lanes.run("image")

    assert [(lanes.get(task)["cost"], lanes.get(task)["currency"]) for task in (finished, waiting)] == [
        (0.25, "CNY"), (0.25, "CNY")]
    assert (lanes.get(after)["cost"], lanes.get(after)["currency"]) == (9.0, "USD")
    unpriced = lanes.submit(IMAGE_TASK)
    lanes.run("image")
    body = lanes.get(unpriced)
    assert body["usage"]["generated_images"] == 1 and (body["cost"], body["currency"]) == (None, None)


def test_what_ark_refused_or_never_saw_costs_nothing_and_an_unreadable_answer_is_unknown(lanes: Lanes) -> None:
    priced(lanes, IMAGE_MODEL, per_image=0.25)
    refused = lanes.submit({**IMAGE_TASK, "prompt": "a cat SIM_SENSITIVE_INPUT"})
    lanes.run("image")
    cancelled = lanes.submit(IMAGE_TASK)
    assert lanes.api.request("POST", f"/api/tasks/{cancelled}/cancel", as_user=DEMO).status_code == 200
    lanes.ark.configure(malformed_answer_fraction=1.0, malformed_answer_kinds=["not_json"])
    unreadable = lanes.submit(IMAGE_TASK)
    lanes.run("image")

    for task_id in (refused, cancelled):
        body = lanes.get(task_id)
        assert body["status"] in ("failed", "cancelled")
        assert (body["usage"], body["cost"], body["currency"]) == (None, 0, "CNY")
    body = lanes.get(unreadable)
    assert body["error"]["code"] == "invalid_response" and body["cost"] is None  # Ark may have billed it


ADMIN_MODEL = "/api/admin/models"
UPSTREAM = {"image": "doubao-seedream-4-5-251128", "video": "doubao-seedance-1-0-pro-250528"}
MODEL_OF = {"image": IMAGE_MODEL, "video": VIDEO_MODEL}
NOT_PRICES = [
    ("video", '{"currency": "CNY", "per_image": 0.25}', "price.per_image"),
    ("image", '{"currency": "CNY", "per_second": 1}', "price.per_second"),
    ("image", '{"currency": "CNY", "per_million_tokens": 1}', "price.per_million_tokens"),
    ("image", '{"currency": "CNY", "per_image": -0.01}', "price.per_image"),
    ("image", '{"currency": "CNY", "per_image": true}', "price.per_image"),
    ("image", '{"currency": "CNY", "per_image": "1"}', "price.per_image"),
    ("image", '{"currency": "CNY", "per_image": null}', "price.per_image"),
    ("image", '{"currency": "CNY", "per_image": NaN}', "price.per_image"),
    ("video", '{"currency": "CNY", "per_second": Infinity}', "price.per_second"),
    ("video", '{"currency": "CNY", "per_second": -Infinity}', "price.per_second"),
    ("image", '{"currency": "CNY", "per_image": 1e400}', "price.per_image"),
    ("image", '{"currency": "CNY", "per_image": 1e7}', "price.per_image"),
    ("image", '{"currency": "ABC", "per_image": 1}', "price.currency"),
    ("image", '{"currency": "cny", "per_image": 1}', "price.currency"),
    ("image", '{"currency": "XTS", "per_image": 1}', "price.currency"),
    ("image", '{"currency": 156, "per_image": 1}', "price.currency"),
    ("image", '{"currency": "CNY"}', "price"),
    ("video", '{"currency": "CNY", "per_second": 1, "per_million_tokens": 1}', "price"),
    ("image", '{"currency": "CNY", "per_image": 1, "per_task": 1}', "price.per_task"),
    ("image", '{"per_image": 1}', "price.currency"),
    ("image", '[1]', "price"),
]


def test_a_price_that_is_not_one_is_refused_naming_the_field(api: Api) -> None:
    """On a new model and on a change: each answer a 400 naming the field, and nothing stored."""
    for model_type, price, field in NOT_PRICES:
        model = {"model_id": f"priced-{model_type}", "type": model_type, "upstream_model": UPSTREAM[model_type],
                 "concurrency": 1, "daily_quota": 10}
        create = api.request("POST", ADMIN_MODEL, as_user=ADMIN,
                             raw=json.dumps(model)[:-1] + f', "price": {price}}}')
        update = api.request("PUT", f"{ADMIN_MODEL}/{MODEL_OF[model_type]}", as_user=ADMIN,
                             raw=f'{{"price": {price}}}')
        for answer in (create, update):
            assert answer.status_code == 400, (price, answer.body)
            assert field in [detail["field"] for detail in answer.data["error"]["details"]], (price, answer.body)
    for model_type, model in MODEL_OF.items():
        assert api.request("GET", f"{ADMIN_MODEL}/{model}", as_user=ADMIN).data["price"] is None
        assert api.request("GET", f"{ADMIN_MODEL}/priced-{model_type}", as_user=ADMIN).status_code == 404


def test_a_price_is_stored_as_given_and_shown_to_admins_only(api: Api) -> None:
    price = {"currency": "USD", "per_million_tokens": 2.5}
    answer = api.request("PUT", f"{ADMIN_MODEL}/{VIDEO_MODEL}", {"price": price}, as_user=ADMIN)
    assert answer.status_code == 200 and answer.data["price"] == price
    assert api.request("GET", f"{ADMIN_MODEL}/{VIDEO_MODEL}", as_user=ADMIN).data["price"] == price
    public = api.request("GET", "/api/models", as_user=DEMO).data["models"]
    assert all("price" not in model for model in public)
    cleared = api.request("PUT", f"{ADMIN_MODEL}/{VIDEO_MODEL}", {"price": None}, as_user=ADMIN)
    assert cleared.status_code == 200 and cleared.data["price"] is None


def test_a_stored_price_of_no_known_shape_counts_no_cost() -> None:
    """Safeguard: a task's stored price is read defensively (a record written by hand or by an older version), so
    no such price can break the write that ends the task."""
    usage = {"generated_images": 2}
    for price in ({"currency": "CNY", "per_image": "0.25"}, {"currency": "CNY", "per_image": True},
                  {"currency": "CNY", "per_second": 1}, {"per_image": 1}, [1], "CNY"):
        task = TaskRecord("tsk_x", type="image", price=price, ark_called=True)
        assert [str(action) for action in costs.image_actions(task, usage, 2)] == [str(TaskRecord.usage.set(usage))]
        assert costs.unbilled_end(TaskRecord("tsk_x", type="image", price=price), "failed", 0) == []


def test_costs_are_rounded_to_six_places_and_absurd_ones_are_not_stored() -> None:
    assert costs.rounded(Decimal("0.1") * 3) == 0.3
    assert costs.rounded(Decimal(15) * Decimal(97_920) / 1_000_000) == 1.4688
    assert costs.rounded(Decimal("0.0000004")) == 0.0 and costs.rounded(Decimal("0.0000016")) == 0.000002
    assert costs.rounded(Decimal(10) ** 13) is None and costs.rounded(Decimal(10) ** 200) is None
