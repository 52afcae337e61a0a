"""The metrics match the tasks' own records once the sweeper's roll-up ran: counts exactly, p50/p95 within one
histogram bucket, costs per currency; a finished task is counted exactly once, whether two runs race, a run read
it and died, or its owner deleted it first (tests/metrics/test_rollup_model.py tries every interleaving); a mark
that cannot be applied is set aside without holding the others back; the routes refuse bad windows; a queued task's
body and events carry `eta_s`, a running video's `progress`."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import aws, wiring
from chalicelib.api.cursors import encode_cursor
from chalicelib.api.responses import UsageRow
from chalicelib.ark.client import VolcVideoClient
from chalicelib.clock import epoch_of, iso
from chalicelib.errors import error_object
from chalicelib.metrics import figures, histogram, rollup
from chalicelib.schemas import USAGE_PAGE_MAX
from chalicelib.settings import get_settings
from chalicelib.store import slots, statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.wiring import Wiring
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import ADMIN, DEMO, IMAGE_MODEL, IMAGE_TASK, OTHER, VIDEO_MODEL, VIDEO_TASK


class Fleet:
    """Tasks made through the API on a clock the test moves, driven through the state machine as lanes would."""

    def __init__(self, api: Api, clock: FrozenClock) -> None:
        self.api = api
        self.clock = clock

    def create(self, body: dict[str, Any] = IMAGE_TASK, user: tuple[str, str] = DEMO) -> str:
        response = self.api.request("POST", "/api/tasks", body, as_user=user)
        assert response.status_code == 201, response.body
        self.clock.advance(0.01)  # the queue's order is the creation time's
        return str(response.data["id"])

    def task(self, task_id: str) -> TaskRecord:
        return TaskRecord.get(task_id, consistent_read=True)

    def start(self, task_id: str) -> None:
        task = self.task(task_id)
        held = slots.try_acquire(task.model_id, task_id, self.clock.now() + 600, user_id=task.user_id)
        assert isinstance(held, slots.Held)
        statemachine.transition(task, statemachine.RUNNING, clock=self.clock)

    def end(self, task_id: str, status: str, *, code: str | None = None, cost: float | None = None,
            currency: str = "CNY") -> None:
        actions = [TaskRecord.error.set(error_object(code, "it failed"))] if code else []
        if cost is not None:
            actions += [TaskRecord.cost.set(cost), TaskRecord.currency.set(currency)]
        statemachine.transition(self.task(task_id), status, actions=actions, clock=self.clock)

    def metrics(self, window: str = "1h") -> dict[str, Any]:
        response = self.api.request("GET", f"/api/admin/metrics?window={window}", as_user=ADMIN)
        assert response.status_code == 200, response.body
        return {model["model_id"]: model for model in response.data["models"]}

    def sweep(self) -> int:
        """The sweeper's run: what it counted (the figures lag the tasks until it runs)."""
        return wiring.current().sweeper.sweep().metrics_applied


@pytest.fixture
def fleet(api: Api) -> Iterator[Fleet]:
    clock = FrozenClock()
    # No video here reaches Ark: the sweeper's client is never asked.
    unreachable = VolcVideoClient("http://127.0.0.1:9", "unused")
    wiring.install(Wiring(get_settings(), clock=clock, video_client=unreachable))
    for model_id, concurrency in ((IMAGE_MODEL, 4), (VIDEO_MODEL, 3)):
        slots.configure(model_id, concurrency, None)  # as the model's creation writes it
    figures.forget_recent()
    for user in (ADMIN, DEMO, OTHER):
        api.token(user)  # logged in before the clock moves on (a token is never issued in the future)
    yield Fleet(api, clock)
    wiring.install(None)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_within_a_bucket(reported: float | None, values: list[float], q: float) -> None:
    assert reported is not None
    assert abs(histogram.bucket_of(reported) - histogram.bucket_of(nearest_rank(values, q))) <= 1


def test_the_metrics_and_the_usage_match_the_tasks_own_records(fleet: Fleet) -> None:
    run = [  # (user, wait s, run s or None: ended from the queue, status, error code, cost)
        (DEMO, 2, 12, "succeeded", None, 0.25), (DEMO, 7, 30, "succeeded", None, 0.25),
        (OTHER, 40, 95, "succeeded", None, 0.25), (DEMO, 1, 3, "failed", "OutputImageSensitiveContentDetected", None),
        (OTHER, 5, 300, "failed", "timeout", None), (DEMO, 9, None, "cancelled", None, None),
        (DEMO, 3, None, "expired", None, None), (DEMO, 4, 50, "expired", None, None),
    ]
    ended: list[str] = []
    for user, wait, took, status, code, cost in run:
        task_id = fleet.create(user=user)
        fleet.clock.advance(wait)
        if took is not None:
            fleet.start(task_id)
            fleet.clock.advance(took)
        fleet.end(task_id, status, code=code, cost=cost)
        ended.append(task_id)
    still_queued, still_running = fleet.create(), fleet.create(user=OTHER)
    fleet.start(still_running)
    assert fleet.sweep() == len(ended)

    records = [fleet.task(task_id) for task_id in ended]
    started = [task for task in records if task.started_at]
    waits = [epoch_of(task.started_at) - epoch_of(task.created_at) for task in started]
    runs = [epoch_of(task.finished_at) - epoch_of(task.started_at) for task in started]
    outcomes = Counter(task.status for task in records) + Counter(task.error.code for task in records if task.error)
    for window in ("1h", "24h"):
        image = fleet.metrics(window)[IMAGE_MODEL]
        assert image["outcomes"] == dict(outcomes)
        assert (image["queued"], image["running"], image["concurrency"]) == (1, 1, 4)
        assert image["cost"] == pytest.approx(sum(task.cost or 0 for task in records)) and image["currency"] == "CNY"
        for name, values in (("wait_s", waits), ("run_s", runs)):
            assert_within_a_bucket(image[name]["p50"], values, 0.5)
            assert_within_a_bucket(image[name]["p95"], values, 0.95)
        assert image["circuit"] == {"state": "closed", "since": None, "reason": None}
        assert (image["ark_429"], image["ark_5xx"]) == (0, 0)
    idle = fleet.metrics("24h")[VIDEO_MODEL]
    assert idle["outcomes"] == {} and idle["wait_s"] == {"p50": None, "p95": None} and idle["cost"] == 0

    usage = fleet.api.request("GET", "/api/admin/usage?days=14", as_user=ADMIN)
    assert usage.status_code == 200, usage.body
    assert usage.data["timezone"] == get_settings().quota_timezone
    rows = {(row["model_id"], row["username"]): row for row in usage.data["rows"]}
    day = rollup.day_of(fleet.clock.now(), get_settings().quota_timezone)
    for user in (DEMO, OTHER):
        own = [task for task in records if task.username == user[0]]
        assert rows[(IMAGE_MODEL, user[0])] == {
            "day": day, "model_id": IMAGE_MODEL, "username": user[0], "requests": len(own),
            "succeeded": sum(task.status == "succeeded" for task in own),
            "failed": sum(task.status == "failed" for task in own),
            "cost": pytest.approx(sum(task.cost or 0 for task in own)), "currency": "CNY",
            "costs": {"CNY": pytest.approx(sum(task.cost or 0 for task in own))}}
    assert still_queued not in {task.task_id for task in records}


def test_a_finished_task_is_counted_once_by_the_next_run_however_runs_race(fleet: Fleet) -> None:
    ended = [fleet.create() for _ in range(3)]
    for task_id in ended:
        fleet.end(task_id, "cancelled", cost=0.25)
    assert fleet.task(ended[0]).metrics_due is not None
    assert fleet.metrics()[IMAGE_MODEL]["outcomes"] == {}  # nothing on the ending's path: the next run counts it

    # Two runs read the same page; the second's transaction finds the marks gone and counts nothing.
    first, second = list(rollup.marked()), list(rollup.marked())
    reports = [rollup.RollupReport(), rollup.RollupReport()]
    for read, report in zip((first, second), reports, strict=True):
        rollup.apply_tasks(read, report)
    assert (reports[0].applied, reports[0].transactions) == (3, 1)
    assert (reports[1].applied, reports[1].gone) == (0, 3)
    assert fleet.sweep() == 0
    assert rollup.apply(fleet.task(ended[0])) is False
    image = fleet.metrics()[IMAGE_MODEL]
    assert image["outcomes"] == {"cancelled": 3} and image["cost"] == pytest.approx(0.75)
    assert all(fleet.task(task_id).metrics_due is None for task_id in ended)


def test_one_transaction_counts_a_page_within_dynamodbs_limits(fleet: Fleet) -> None:
    """A page of 100 marks of many users: every transaction within 100 items, the figures exact."""
    users = [f"u{index}" for index in range(40)]
    tasks = [_finished_record(f"tsk_many_{index:03d}", users[index % len(users)], fleet.clock.now() - index,
                              save=False) for index in range(rollup.PAGE)]
    with TaskRecord.batch_write() as batch:
        for task in tasks:
            batch.save(task)
    sizes: list[int] = []
    original = rollup._transact

    def transact(items: list[dict[str, Any]]) -> None:
        sizes.append(len(items))
        original(items)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rollup, "_transact", transact)
        assert fleet.sweep() == len(tasks)
    assert sizes and max(sizes) <= rollup.MAX_TRANSACTION_ITEMS and len(sizes) <= 4
    image = fleet.metrics("24h")[IMAGE_MODEL]
    assert image["outcomes"] == {"succeeded": len(tasks)} and image["costs"] == {"CNY": pytest.approx(25.0)}
    usage = fleet.api.request("GET", "/api/admin/usage?days=2", as_user=ADMIN).data["rows"]
    assert sum(row["requests"] for row in usage) == len(tasks) and len(usage) == len(users)


def _finished_record(task_id: str, user_id: str, finished: float, *, save: bool = True, **fields: Any) -> TaskRecord:
    """A finished, marked task written as its terminal transition would have left it."""
    values: dict[str, Any] = dict(
        user_id=user_id, username=user_id, model_id=IMAGE_MODEL, type="image", status="succeeded",
        upstream_model="seedream", lane="image", created_at=iso(finished - 3), updated_at=iso(finished),
        created_key=f"{iso(finished - 3)}#{task_id}", list_shard="0", started_at=iso(finished - 2),
        finished_at=iso(finished), cost=0.25, currency="CNY", metrics_shard=rollup.mark_shard_name(0),
        metrics_due=finished)
    record = TaskRecord(task_id, **{**values, **fields})
    if save:
        record.save()
    return record


def test_a_mark_that_cannot_be_applied_is_set_aside_without_holding_the_others_back(fleet: Fleet) -> None:
    now = fleet.clock.now()
    broken = _finished_record("tsk_broken", "u-broken", now - 100, created_at="not a time")  # oldest: the page's head
    refused = _finished_record("tsk_refused", "u-refused", now - 90)
    good = [_finished_record(f"tsk_good_{index}", "u-good", now - index) for index in range(3)]
    original = rollup._transact

    def transact(items: list[dict[str, Any]]) -> None:
        # DynamoDB refusing whatever holds this task's contribution (a figure it cannot take).
        if any(item["Update"]["Key"].get("task_id", {}).get("S") == refused.task_id for item in items):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "refused"}}, "TransactWriteItems")
        original(items)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rollup, "_transact", transact)
        assert fleet.sweep() == len(good)  # the others are counted at the first run
        for _ in range(rollup.MAX_FAILURES - 1):
            assert fleet.sweep() == 0
        report = rollup.apply_due()
    assert (report.applied, report.failed, report.set_aside) == (0, 0, 0)  # both set aside: looked at no more
    for task_id in (broken.task_id, refused.task_id):
        record = fleet.task(task_id)
        assert record.metrics_due is None and record.metrics_shard is None and record.metrics_failed
    assert fleet.metrics()[IMAGE_MODEL]["outcomes"] == {"succeeded": len(good)}


def test_costs_in_two_currencies_are_never_added_up(fleet: Fleet) -> None:
    """The model's price changed currency within the window: each sum stays in its own; `cost` is the one in the
    currency the price names now."""
    for cost, currency in ((0.25, "CNY"), (0.5, "CNY"), (0.04, "USD")):
        task_id = fleet.create()
        fleet.start(task_id)
        fleet.end(task_id, "succeeded", cost=cost, currency=currency)
    fleet.api.request("PUT", f"/api/admin/models/{IMAGE_MODEL}", {"price": {"currency": "USD", "per_image": 0.04}},
                      as_user=ADMIN)
    fleet.sweep()
    image = fleet.metrics()[IMAGE_MODEL]
    assert image["costs"] == {"CNY": pytest.approx(0.75), "USD": pytest.approx(0.04)}
    assert (image["cost"], image["currency"]) == (pytest.approx(0.04), "USD")
    (row,) = fleet.api.request("GET", "/api/admin/usage?days=1", as_user=ADMIN).data["rows"]
    assert row["costs"] == image["costs"] and (row["cost"], row["currency"]) == (pytest.approx(0.04), "USD")


def test_an_error_code_that_names_a_status_is_not_counted_as_that_status(fleet: Fleet) -> None:
    """Ark's expiry of a video ends it `expired` with the error code `expired`: one task, one outcome. An error
    code that names another status counts as `other`, never as that status."""
    expired, failed = fleet.create(VIDEO_TASK), fleet.create(VIDEO_TASK)
    fleet.start(expired)
    fleet.clock.advance(5)
    fleet.end(expired, "expired", code="expired")
    fleet.end(failed, "failed", code="succeeded")
    fleet.sweep()
    assert fleet.metrics()[VIDEO_MODEL]["outcomes"] == {"expired": 1, "failed": 1, "other": 1}


def test_a_finished_task_deleted_before_it_was_counted_is_counted(fleet: Fleet) -> None:
    """Its owner deletes it before the sweeper's next run: what it was (and cost) stays in the figures."""
    task_id = fleet.create()
    fleet.end(task_id, "cancelled", cost=0.25)
    deleted = fleet.api.request("DELETE", f"/api/tasks/{task_id}", as_user=DEMO)
    assert deleted.status_code == 200, deleted.body
    assert fleet.sweep() == 0
    image = fleet.metrics()[IMAGE_MODEL]
    assert image["outcomes"] == {"cancelled": 1} and image["cost"] == pytest.approx(0.25)
    usage = fleet.api.request("GET", "/api/admin/usage?days=1", as_user=ADMIN).data["rows"]
    assert [(row["username"], row["requests"]) for row in usage] == [(DEMO[0], 1)]


def test_ark_errors_and_the_queue_samples_are_counted(fleet: Fleet) -> None:
    now = fleet.clock.now()
    for status in (429, 429, 503, 400, None):
        rollup.count_ark_error(IMAGE_MODEL, status, now)
    queued = [fleet.create() for _ in range(7)]
    fleet.start(queued[0])
    wiring.current().sweeper.sweep()
    wiring.current().sweeper.sweep()  # a second sweep of the slot keeps the first sample

    image = fleet.metrics("1h")[IMAGE_MODEL]
    assert (image["ark_429"], image["ark_5xx"]) == (2, 1)
    assert image["queued"] == 6 and image["running"] == 1
    series = image["series"]
    assert len(series["at"]) == len(series["queued"]) == 12
    assert (series["queued"][-1], series["running"][-1]) == (6, 1) and series["queued"][0] is None
    assert len(fleet.metrics("24h")[IMAGE_MODEL]["series"]["at"]) == 288


def test_a_queued_task_gets_an_eta_and_a_running_video_its_progress(fleet: Fleet) -> None:
    for took in (20, 20, 20):
        video = fleet.create(VIDEO_TASK)
        fleet.start(video)
        fleet.clock.advance(took)
        fleet.end(video, "succeeded")
    fleet.sweep()
    figures.forget_recent()
    running = fleet.create(VIDEO_TASK)
    fleet.start(running)
    fleet.clock.advance(5)
    queued = fleet.create(VIDEO_TASK)

    body = fleet.api.request("GET", f"/api/tasks/{running}", as_user=DEMO).data
    assert 0.1 < body["progress"] < 0.5 and body["eta_s"] is None
    fleet.clock.advance(600)
    assert fleet.api.request("GET", f"/api/tasks/{running}", as_user=DEMO).data["progress"] == figures.PROGRESS_CAP
    waiting = fleet.api.request("GET", f"/api/tasks/{queued}", as_user=DEMO).data
    assert waiting["queue_position"] == 1 and 10 < waiting["eta_s"] < 60 and waiting["progress"] is None
    update = wiring.current().live.update_body(fleet.task(queued))
    assert update["eta_s"] == waiting["eta_s"] and update["queue_position"] == 1
    assert wiring.current().live.update_body(fleet.task(running))["progress"] == figures.PROGRESS_CAP


def test_bad_windows_and_days_are_validation_errors(api: Api) -> None:
    for path, query in [("metrics", "window=2h"), ("metrics", "window="), ("metrics", "window=1h&extra=1"),
                        ("usage", "days=0"), ("usage", "days=32"), ("usage", "days=two")]:
        response = api.request("GET", f"/api/admin/{path}?{query}", as_user=ADMIN)
        assert response.status_code == 400, (query, response.body)
        assert response.data["error"]["code"] == "validation_error"
    for path in ("metrics", "usage"):
        assert api.request("GET", f"/api/admin/{path}", as_user=DEMO).status_code == 403


# Pure arithmetic: a tenth of the profile's examples (the deep profile's still run long).
@settings(max_examples=max(20, settings().max_examples // 10))
@given(st.lists(st.floats(min_value=0, max_value=80_000, allow_nan=False), min_size=1, max_size=200))
def test_quantiles_from_the_buckets_are_within_one_bucket_of_the_true_ones(values: list[float]) -> None:
    counts = Counter(histogram.bucket_of(value) for value in values)
    for q in (0.5, 0.95):
        assert_within_a_bucket(histogram.quantile(counts, q), values, q)


def put_usage(day: str, shard: int, model_id: str, user_id: str, requests: int, cost: float) -> None:
    """A usage item as the roll-up writes it (chalicelib/metrics/rollup.py `_usage_update`)."""
    aws.client("dynamodb").put_item(TableName=rollup.table_name(), Item={
        "pk": {"S": rollup.usage_pk(day, shard)}, "sk": {"S": f"{model_id}#{user_id}"}, "day": {"S": day},
        "model_id": {"S": model_id}, "user_id": {"S": user_id}, "username": {"S": f"name-{user_id[-4:]}"},
        "requests": {"N": str(requests)}, "succeeded": {"N": str(requests)}, "cost": {"N": repr(cost)},
        "currency": {"S": "CNY"}})


def test_usage_comes_in_pages_that_hold_every_row_once(fleet: Fleet) -> None:
    zone = get_settings().quota_timezone
    days = [rollup.day_of(fleet.clock.now() - back * 86_400, zone) for back in range(4)]
    expected: list[tuple[str, str, str, int]] = []
    for day in (days[0], days[2]):  # two days with rows around one without (days[1]) and one past the last
        for model_id in (IMAGE_MODEL, VIDEO_MODEL):
            for number in range(4):
                user_id = f"usr_{'a' * 22}{number:04d}"
                # The same model and user in several shards: one row, their sums.
                for shard in range(number % rollup.SHARDS + 1):
                    put_usage(day, shard, model_id, user_id, 1, 0.5)
                expected.append((day, model_id, f"name-{number:04d}", number % rollup.SHARDS + 1))
    expected.sort(key=lambda row: (-int(row[0].replace("-", "")), row[1], row[2]))

    for limit in (1, 3, 8, 16, 1000):
        rows, cursor, pages = [], None, 0
        while True:
            query = f"days=4&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            response = fleet.api.request("GET", f"/api/admin/usage?{query}", as_user=ADMIN)
            assert response.status_code == 200, response.body
            assert len(response.data["rows"]) <= limit
            rows += response.data["rows"]
            pages += 1
            cursor = response.data["next_cursor"]
            if cursor is None:
                break
        assert [(row["day"], row["model_id"], row["username"], row["requests"]) for row in rows] == expected
        assert all(row["cost"] == pytest.approx(row["requests"] * 0.5) for row in rows)
        assert pages <= len(expected) // limit + 2, limit

    for cursor in ("bm90LWEta2V5", "!!", encode_cursor("2026-01-01#Bad Model#usr_x")):
        response = fleet.api.request("GET", f"/api/admin/usage?cursor={cursor}", as_user=ADMIN)
        assert response.status_code == 400 and response.data["error"]["code"] == "validation_error", cursor
    assert fleet.api.request("GET", "/api/admin/usage?limit=1001", as_user=ADMIN).status_code == 400


def test_a_full_usage_page_of_the_largest_rows_stays_under_lambdas_answer_limit() -> None:
    largest = UsageRow(day="2026-12-31", model_id="m" * 64, username="u" * 64, requests=2**53, succeeded=2**53,
                       failed=2**53, cost=-1.2345678901234567e+300, currency="CNY",
                       costs={code: -1.2345678901234567e+300 for code in ("CNY", "USD", "EUR")}).model_dump(mode="json")
    page = {"timezone": "America/Argentina/ComodRivadavia", "rows": [largest] * USAGE_PAGE_MAX,
            "next_cursor": encode_cursor(f"2026-12-31#{'m' * 64}#{'u' * 128}")}
    # Twice the JSON: API Gateway's proxy answer carries the body as an escaped string (quotes double).
    assert 2 * len(json.dumps(page).encode()) < 6 * 1024 * 1024
    # As chalicelib/schemas.py's USAGE_PAGE_MAX says: under 400 bytes with one currency, some 35 for each other.
    assert len(json.dumps(largest).encode()) < 400 + 2 * 35


def test_an_item_written_before_the_sums_per_currency_is_read_in_its_currency() -> None:
    legacy_and_new = {"cost": {"N": "0.5"}, "currency": {"S": "CNY"}, "c:CNY": {"N": "0.25"}, "c:USD": {"N": "0.04"}}
    assert rollup.costs_of(legacy_and_new) == {"CNY": 0.75, "USD": 0.04}
    assert rollup.shown_cost({"CNY": 0.75, "USD": 0.04}, "USD") == (0.04, "USD")
    assert rollup.shown_cost({"CNY": 0.75, "USD": 0.04}, "EUR") == (0.75, "CNY")  # none in the price's: first by code
    assert rollup.shown_cost({}, "EUR") == (0.0, "EUR") and rollup.shown_cost({"USD": 1.0}, "CNY") == (1.0, "USD")
