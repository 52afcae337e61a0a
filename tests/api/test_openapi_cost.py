"""The OpenAPI document names prices, usage and costs as the API answers them (tests/api/test_openapi.py checks the
rest of each answer the same way)."""

from __future__ import annotations

import pytest

from chalicelib.store.records import TaskRecord
from tests.api.test_openapi import Conformance, document_of
from tests.api_client import Api
from tests.conftest import reconfigure
from tests.factories import ADMIN, DEMO, IMAGE_MODEL, IMAGE_TASK, VIDEO_MODEL


def test_prices_and_costs_match_the_documented_schemas(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARK_API_KEY", "never-called")  # cancelling a queued image asks Ark nothing
    reconfigure()
    conform = Conformance(document_of(api))

    def call(method: str, route: str, path: str, body: object = None, as_user: tuple[str, str] = ADMIN) -> dict:
        return conform.check(api.request(method, path, body, as_user=as_user), method, route)

    model_route = "/api/admin/models/{model_id}"
    for model, price in ((IMAGE_MODEL, {"currency": "CNY", "per_image": 0.25}),
                         (VIDEO_MODEL, {"currency": "EUR", "per_second": 0.5})):
        assert call("PUT", model_route, f"/api/admin/models/{model}", {"price": price})["price"] == price
    created = call("POST", "/api/admin/models", "/api/admin/models", {
        "model_id": "priced", "type": "video", "upstream_model": "doubao-seedance-1-0-pro-250528", "concurrency": 1,
        "daily_quota": 10, "price": {"currency": "USD", "per_million_tokens": 15}})
    assert created["price"] == {"currency": "USD", "per_million_tokens": 15}
    call("PUT", model_route, f"/api/admin/models/{VIDEO_MODEL}", {"price": None})
    call("PUT", model_route, f"/api/admin/models/{VIDEO_MODEL}", {"price": {"currency": "CNY", "per_image": 1}})  # 400
    call("GET", "/api/admin/models", "/api/admin/models")

    queued = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).data["id"]
    cancelled = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).data["id"]
    assert api.request("POST", f"/api/tasks/{cancelled}/cancel", as_user=DEMO).status_code == 200
    finished = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO).data["id"]
    TaskRecord(finished).update(actions=[  # as an image lane records them
        TaskRecord.usage.set({"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}),
        TaskRecord.cost.set(0.25), TaskRecord.currency.set("CNY")])
    shown = {task_id: call("GET", "/api/tasks/{task_id}", f"/api/tasks/{task_id}", as_user=DEMO)
             for task_id in (queued, cancelled, finished)}
    assert [(shown[task]["cost"], shown[task]["currency"]) for task in (queued, cancelled, finished)] == [
        (None, None), (0, "CNY"), (0.25, "CNY")]
    assert shown[finished]["usage"]["generated_images"] == 1
    page = call("GET", "/api/admin/tasks", "/api/admin/tasks?user=demo")
    assert {task["id"]: task["cost"] for task in page["tasks"]}[finished] == 0.25
    assert {status for _, _, status in conform.checked} == {200, 201, 400}
