"""The operations console's pages (dashboard, everyone's tasks, dead letters, audit) in headless Chromium, against
the fake API (tests/web/fake_api.py), which answers the console's routes in the API's shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import PHONE, ConsoleWatch, screenshot
from tests.web.fake_api import ADMIN, FakeArkflow, FakeStack
from tests.web.ui import log_in, values_table

pytestmark = pytest.mark.browser

HTTP_ERROR_IN_CONSOLE = r"Failed to load resource: the server responded with a status of {}"
LAPTOP = {"width": 1280, "height": 800}


def seed_dashboard(fake: FakeArkflow) -> list[str]:
    """Figures for two models over 24 h, and 14 days of usage; returns the days (oldest first)."""
    samples = 288
    last = datetime.now(UTC).replace(second=0, microsecond=0)
    at = [(last - timedelta(minutes=5 * (samples - 1 - index))).strftime("%Y-%m-%dT%H:%M:%S.000Z")
          for index in range(samples)]
    fake.state.metrics["seedream-4-5"] = {
        "queued": 7, "running": 3, "wait_s": {"p50": 4.0, "p95": 95.0}, "run_s": {"p50": 12.0, "p95": 30.0},
        "outcomes": {"succeeded": 120, "failed": 4, "InputTextSensitiveContentDetected": 3}, "ark_429": 48,
        "ark_5xx": 2, "cost": 30.25, "currency": "CNY",
        "series": {"at": at, "queued": [index % 9 for index in range(samples)],
                   "running": [min(4, index % 6) for index in range(samples)]}}
    fake.state.circuits["seedance-1-0-pro"] = {"state": "open", "since": "2026-12-01T10:00:00.000Z",
                                               "reason": "5 Ark 429s within 60 s"}
    today = datetime.now(UTC) + timedelta(hours=8)  # the fake's usage counts days in Asia/Shanghai
    days = [(today - timedelta(days=13 - index)).date().isoformat() for index in range(14)]
    fake.state.usage_rows = [
        {"day": days[13], "model_id": "seedream-4-5", "username": "demo", "requests": 10, "succeeded": 9,
         "failed": 1, "cost": 2.25, "currency": "CNY"},
        {"day": days[13], "model_id": "seedream-4-5", "username": "admin", "requests": 2, "succeeded": 2,
         "failed": 0, "cost": 0.5, "currency": "CNY"},
        {"day": days[12], "model_id": "seedance-1-0-pro", "username": "demo", "requests": 3, "succeeded": 3,
         "failed": 0, "cost": 7.5, "currency": "CNY"},
        {"day": days[0], "model_id": "seedream-4-5", "username": "demo", "requests": 4, "succeeded": 4,
         "failed": 0, "cost": 1.0, "currency": "CNY"},
    ]
    return days


def test_dashboard_draws_each_models_figures_and_closes_a_circuit(new_page, fake_stack: FakeStack,
                                                                   fake: FakeArkflow) -> None:
    days = seed_dashboard(fake)
    fake.state.usage_page_max = 1  # every usage row on a page of its own: the charts need every page
    metrics = fake.state.metrics["seedream-4-5"]
    page = new_page(LAPTOP)
    log_in(page, fake_stack.web_url, *ADMIN)
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()

    cards = page.locator(".model-card")
    expect(cards).to_have_count(len(fake.state.models))
    expect(page.locator(".model-card figure[data-chart='queue'] .uplot canvas")).to_have_count(len(fake.state.models))
    seedream = page.locator(".model-card[data-model-id='seedream-4-5']")
    expect(seedream.locator("[data-stat='queued']")).to_have_text("7")
    expect(seedream.locator("[data-stat='running']")).to_have_text("3 / 4")
    expect(seedream.locator("[data-stat='wait-p95']")).to_have_text("1m 35s")
    expect(seedream.locator("[data-stat='run-p95']")).to_have_text("30s")
    expect(seedream.locator("[data-stat='ark-429']")).to_have_text("48 (2/h)")
    expect(seedream.locator("[data-stat='cost']")).to_have_text("30.25 CNY")
    expect(seedream.locator("[data-outcome='InputTextSensitiveContentDetected']")).to_have_text(
        "InputTextSensitiveContentDetected3")
    queue = seedream.locator("figure[data-chart='queue']")
    expect(queue.locator("figcaption")).to_have_text("Queue and running, last 24 hours")
    table = values_table(queue)
    assert [row[1:] for row in table] == [
        [str(queued), str(running), "4"] for queued, running in zip(metrics["series"]["queued"],
                                                                    metrics["series"]["running"], strict=True)]
    expect(queue.locator(".u-legend")).to_contain_text("Concurrency")

    cost = page.locator("figure[data-chart='cost'][data-currency='CNY']")
    expect(cost.locator(".uplot canvas")).to_have_count(1)
    cost_rows = values_table(cost)
    expect(cost.locator("thead th")).to_have_text(["Day", "seedance-1-0-pro", "seedream-4-5"])
    assert [row[0] for row in cost_rows] == days
    assert cost_rows[0][1:] == ["0", "1"] and cost_rows[12][1:] == ["7.5", "0"] and cost_rows[13][1:] == ["0", "2.75"]
    expect(page.locator(".usage-users tr[data-username='demo']")).to_contain_text("17" "16" "1" "10.75 CNY")
    screenshot(page, "50-admin-dashboard")

    seedance = page.locator(".model-card[data-model-id='seedance-1-0-pro']")
    expect(seedance.locator("[data-circuit]")).to_have_text("Circuit open")
    expect(seedance.locator(".circuit-note")).to_contain_text("5 Ark 429s within 60 s")
    seedance.get_by_role("button", name="Close circuit of seedance-1-0-pro").focus()
    page.keyboard.press("Enter")
    confirm = page.get_by_role("dialog", name="Close the circuit of seedance-1-0-pro?")
    expect(confirm.get_by_role("button", name="Close circuit")).to_be_focused()
    page.keyboard.press("Enter")
    expect(seedance.locator("[data-circuit]")).to_have_text("Circuit closed")
    expect(seedance.get_by_role("button", name="Close circuit of seedance-1-0-pro")).to_be_hidden()
    assert fake.requests_to("POST", "/api/admin/models/seedance-1-0-pro/circuit/close") == 1
    assert fake.state.audit[-1]["action"] == "circuit.close"

    # A breaker opening reaches the dashboard over the admin's WebSocket, long before the next 30 s poll.
    fake.set_circuit("seedream-4-5", "half_open", "probing Ark")
    expect(seedream.locator("[data-circuit]")).to_have_text("Circuit half-open")

    del metrics["series"]  # from here on, the fake's own series of the window asked for
    page.get_by_label("Window").select_option("1h")
    expect(queue.locator("figcaption")).to_have_text("Queue and running, last hour")
    expect(queue.locator("table.chart-values tbody tr")).to_have_count(12)  # the fake's own 1 h series
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_all_tasks_filters_and_operator_actions(page: Page, fake_stack: FakeStack, fake: FakeArkflow,
                                                console: ConsoleWatch) -> None:
    console.allow(HTTP_ERROR_IN_CONSOLE.format(409))  # Ark already generates the video: the cancel is refused
    queued = fake.add_task("demo", prompt="a queued fox")
    running_image = fake.add_task("demo", prompt="a running fox")
    fake.set_status(running_image["id"], "running", broadcast=False)
    video = fake.add_task("demo", type="video", model_id="seedance-1-0-pro", prompt="waves", params={})
    fake.set_status(video["id"], "running", broadcast=False)
    fake.state.generating_at_ark.add(video["id"])
    admins = fake.add_task("admin", prompt="the admin's own", status="succeeded")
    log_in(page, fake_stack.web_url, *ADMIN)
    page.get_by_role("link", name="All tasks").click()
    rows = page.locator("tbody tr[data-task-id]")
    expect(rows).to_have_count(4)
    expect(page.locator(f"tr[data-task-id='{admins['id']}']")).to_contain_text("admin")

    filters = page.get_by_role("search", name="Filter tasks")
    filters.get_by_label("User").fill("demo")
    filters.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(3)
    filters.get_by_label("Status").select_option("running")
    expect(rows).to_have_count(2)
    filters.get_by_label("Type").select_option("image")
    expect(rows).to_have_count(1)
    filters.get_by_label("Model").select_option("seedream-4-5")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task-id", running_image["id"])
    screenshot(page, "51-admin-all-tasks")

    row = page.locator(f"tr[data-task-id='{running_image['id']}']")
    row.get_by_role("button", name=f"Requeue {running_image['id']}").click()
    expect(page.locator(".toast").last).to_have_text(f"Task {running_image['id']} is back in the queue.")
    assert fake.task(running_image["id"])["status"] == "queued"
    requeued = page.locator(f"tr[data-task-id='{running_image['id']}']")
    expect(requeued).to_have_attribute("data-status", "queued")
    expect(requeued.locator("td[data-label='User']")).to_have_text("demo")

    filters.get_by_label("Status").select_option("")
    filters.get_by_label("Type").select_option("")
    filters.get_by_label("Model").select_option("")
    expect(rows).to_have_count(3)
    page.locator(f"tr[data-task-id='{queued['id']}']").get_by_role("button", name=f"Cancel {queued['id']}").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
    expect(page.locator(f"tr[data-task-id='{queued['id']}'] .status-pill")).to_have_text("Cancelled")
    assert fake.task(queued["id"])["status"] == "cancelled"
    assert fake.state.audit[-1] == {**fake.state.audit[-1], "action": "task.status", "target": f"task:{queued['id']}",
                                    "before": {"status": "queued"}, "after": {"status": "cancelled"}}

    page.locator(f"tr[data-task-id='{video['id']}']").get_by_role("button", name=f"Cancel {video['id']}").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
    expect(page.locator(".toast.error").last).to_contain_text("Ark is generating this video")
    fake.state.generating_at_ark.clear()
    page.locator(f"tr[data-task-id='{video['id']}']").get_by_role("button", name=f"Fail {video['id']}").click()
    dialog = page.get_by_role("dialog", name=f"Fail task {video['id']}")
    dialog.get_by_label("Error code").fill("stuck_at_ark")
    dialog.get_by_role("button", name="Fail task").click()
    expect(dialog).to_be_hidden()
    failed = page.locator(f"tr[data-task-id='{video['id']}']")
    expect(failed.locator(".status-pill")).to_have_text("Failed")
    expect(failed).to_contain_text("stuck_at_ark")
    assert fake.task(video["id"])["error"] == {"code": "stuck_at_ark", "message": "Stopped by an operator."}


def test_dead_letters_replay_shows_what_went_back(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    waiting = [fake.add_task("demo", prompt=f"waiting {index}") for index in range(2)]
    finished = fake.add_task("demo", prompt="done already", status="succeeded")
    fake.state.dlq = {
        "seedream-4-5": [
            {"message_id": f"m-{task['id']}", "task_id": task["id"], "reason": "worker crashed",
             "receive_count": 5, "sent_at": "2026-12-01T09:00:00.000Z"} for task in [*waiting, finished]],
        "webhook-delivery": [{"message_id": "m-hook", "task_id": waiting[0]["id"], "reason": "HTTP 500",
                              "receive_count": 8, "sent_at": "2026-12-01T09:30:00.000Z"}],
        "seedance-1-0-pro": [],
    }
    log_in(page, fake_stack.web_url, *ADMIN)
    page.get_by_role("link", name="Dead letters").click()
    lane = page.locator(".dlq-queue[data-lane='seedream-4-5']")
    expect(lane.locator("tbody tr")).to_have_count(3)
    expect(lane.locator(f"tr[data-message-id='m-{finished['id']}']")).to_contain_text("Succeeded")
    expect(page.locator(".dlq-queue[data-lane='seedance-1-0-pro']")).to_contain_text("No dead letters.")
    expect(page.get_by_role("button", name="Replay all of seedance-1-0-pro")).to_be_disabled()
    screenshot(page, "52-admin-dead-letters")

    page.get_by_role("button", name="Replay all of seedream-4-5").click()
    confirm = page.get_by_role("dialog", name="Replay seedream-4-5?")
    expect(confirm).to_contain_text("About 3 messages")
    confirm.get_by_role("button", name="Replay").click()
    result = page.locator(".replay-result")
    expect(result).to_have_attribute("role", "status")
    expect(result).to_have_text("seedream-4-5: replayed 2, dropped 1 (task_finished: 1).")
    expect(lane).to_contain_text("No dead letters.")

    hook = page.locator(".dlq-queue[data-lane='webhook-delivery']")
    hook.get_by_role("button", name="Replay m-hook").click()
    page.get_by_role("dialog").get_by_role("button", name="Replay").click()
    expect(result).to_have_text("webhook-delivery: replayed 1, dropped 0.")
    assert fake.requests_to("POST", "/api/admin/dlq/webhook-delivery/replay") == 1
    assert [entry["action"] for entry in fake.state.audit] == ["dlq.replay", "dlq.replay"]
    screenshot(page, "53-admin-dead-letters-replayed")


def test_audit_log_pages_and_filters(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    entries = 110
    for index in range(entries):
        actor = "alice" if index % 3 else "bob"
        fake.record(actor, "model.update", f"model:m-{index % 4}", {"concurrency": index, "enabled": True},
                    {"concurrency": index + 1, "enabled": True},
                    at=(start + timedelta(minutes=index)).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    fake.record("admin", "user.create", "user:carol", None, {"username": "carol", "role": "user"})
    log_in(page, fake_stack.web_url, *ADMIN)
    page.get_by_role("link", name="Audit").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("user.create")
    expect(rows.first).to_contain_text('role: "user"')
    expect(rows.nth(1)).to_contain_text(f"concurrency: {entries - 1} → {entries}")
    expect(rows.nth(1)).not_to_contain_text("enabled")  # unchanged fields are left out
    more = page.get_by_role("button", name="Load more")
    more.click()
    expect(rows).to_have_count(100)
    more.click()
    expect(rows).to_have_count(entries + 1)
    expect(more).to_be_hidden()
    expect(rows.last).to_contain_text("concurrency: 0 → 1")
    screenshot(page, "54-admin-audit", full_page=False)

    filters = page.get_by_role("search", name="Filter the audit log")
    filters.get_by_label("Actor").fill("bob")
    filters.get_by_label("Target").fill("model:m-0")
    fake.state.empty_pages = 2  # a filtered listing's pages may come back empty: the page follows them
    filters.get_by_role("button", name="Apply").click()
    bobs = [index for index in range(entries) if index % 3 == 0 and index % 4 == 0]
    expect(rows).to_have_count(len(bobs))
    expect(rows.locator("td[data-label='Actor']")).to_have_text(["bob"] * len(bobs))
    expect(more).to_be_hidden()


def test_console_fits_a_phone(new_page, fake_stack: FakeStack, fake: FakeArkflow, console: ConsoleWatch) -> None:
    console.allow(HTTP_ERROR_IN_CONSOLE.format(503))
    seed_dashboard(fake)
    fake.add_task("demo", prompt="A long prompt " * 20)
    phone = new_page(PHONE)
    log_in(phone, fake_stack.web_url, *ADMIN)
    fake.fail_next("GET", "/api/admin/metrics", 503, "unavailable", "Metrics are not available right now.")
    phone.get_by_role("link", name="Dashboard").click()
    # One reading failing leaves the other standing, and says why.
    expect(phone.get_by_role("alert")).to_contain_text("Metrics are not available right now.")
    expect(phone.locator("figure[data-chart='cost'] .uplot canvas")).to_have_count(1)
    expect(phone.locator(".model-card")).to_have_count(0)
    phone.get_by_role("button", name="Refresh").click()
    expect(phone.get_by_role("alert")).to_be_hidden()
    expect(phone.locator(".model-card figure[data-chart='queue'] .uplot canvas")).to_have_count(len(fake.state.models))
    canvas_width = phone.locator(".model-card canvas").first.evaluate("canvas => canvas.getBoundingClientRect().width")
    assert 0 < canvas_width <= PHONE["width"]
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(phone, "55-phone-admin-dashboard")
    phone.get_by_role("link", name="All tasks").click()
    expect(phone.locator("tbody tr[data-task-id]")).to_have_count(1)
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(phone, "56-phone-admin-all-tasks")
