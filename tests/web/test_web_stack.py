"""The web app end to end in headless Chromium, against the real local stack (`python -m devstack`)."""

from __future__ import annotations

import io
import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import boto3
import httpx
import pytest
from playwright.sync_api import Page, expect

from chalicelib.resources import lane_named
from devstack.config import AWS_REGION, FAKE_AWS_CREDENTIALS, Credentials
from devstack.testing import LocalStack
from tests.polling import wait_for
from tests.web.conftest import screenshot
from tests.web.ui import IMAGE_FORM, file_payload, log_in, open_video_tab, png, values_table

pytestmark = [pytest.mark.browser, pytest.mark.stack]

RESULT_TIMEOUT_MS = 60_000


@pytest.fixture
def stack(local_stack: LocalStack) -> LocalStack:
    return local_stack


def api_headers(stack: LocalStack, credentials: Credentials) -> dict[str, str]:
    # The stack's first requests are slow on a loaded machine (cold imports, password hashing): httpx's 5 s is short.
    response = httpx.post(f"{stack.api_url}/api/users/login",
                          json={"username": credentials.username, "password": credentials.password}, timeout=30.0)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def new_image_model(stack: LocalStack, **settings: Any) -> tuple[str, str]:
    """A model of this test's own, so changing its limits touches no other test; returns (id, display name)."""
    model_id = f"web-{uuid.uuid4().hex[:8]}"
    display_name = f"Test model {model_id}"
    response = httpx.post(f"{stack.api_url}/api/admin/models", headers=api_headers(stack, stack.admin), json={
        "model_id": model_id, "type": "image", "upstream_model": "doubao-seedream-4-5-251128",
        "display_name": display_name, "concurrency": 2, "daily_quota": 100, **settings,
    })
    response.raise_for_status()
    return model_id, display_name


def newest_card(page: Page):
    return page.locator(".task-card").first


def test_image_task_shows_its_image(page: Page, stack: LocalStack, tmp_path: Path) -> None:
    large_reference = tmp_path / "large.png"
    large_reference.write_bytes(png(400, 300, noisy=True))
    log_in(page, stack.web_url, stack.demo.username, stack.demo.password)
    form = page.locator(IMAGE_FORM)
    form.get_by_label("Model").select_option(label="Seedream 4.5")
    form.get_by_label("Prompt").fill("A paper boat on a puddle, end to end")
    form.locator("input[type=file]").set_input_files(file_payload("small.png", png(64, 64)))
    form.locator("input[type=file]").set_input_files(large_reference)
    expect(form.locator(".reference")).to_have_count(2)
    form.get_by_role("button", name="Generate image").click()
    expect(page.locator(".toast").first).to_have_text("Image task queued.")

    item = newest_card(page)
    expect(item.locator(".task-prompt")).to_have_text("A paper boat on a puddle, end to end")
    # Reaching the button of a form taller than the window must not scroll the page to the end of a long task
    # list, away from the new task (whose image, loaded lazily, would then never load).
    expect(item).to_be_in_viewport()
    expect(item.locator(".status-pill")).to_have_text("Succeeded", timeout=RESULT_TIMEOUT_MS)
    image = item.locator(".gallery img").first
    expect(image).to_be_in_viewport()
    # Asked of the image shown now each time: the results copy's update may swap Ark's link for the stored one
    # (a new element) while the first one loads.
    wait_for(lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"), timeout_s=RESULT_TIMEOUT_MS / 1000)
    screenshot(page, "20-stack-image-result", full_page=False)
    item.get_by_role("button", name=re.compile(r"View image 1 of \d+ full size")).click()
    expect(page.get_by_role("dialog").get_by_role("link", name="Download")).to_be_visible()
    page.keyboard.press("Escape")


def test_video_task_shows_a_player(page: Page, stack: LocalStack) -> None:
    log_in(page, stack.web_url, stack.demo.username, stack.demo.password)
    form = open_video_tab(page)
    form.get_by_label("Model").select_option(label="Seedance 1.0 pro")
    form.get_by_label("Prompt (optional with a first frame)").fill("Waves rolling in, end to end")
    form.get_by_label("Resolution").select_option("480p")
    form.get_by_label("Duration (seconds)").fill("2")
    form.get_by_role("button", name="Generate video").click()

    item = newest_card(page)
    expect(item.locator(".task-prompt")).to_have_text("Waves rolling in, end to end")
    expect(item.locator(".status-pill")).to_have_text("Succeeded", timeout=RESULT_TIMEOUT_MS)
    video = item.locator("video")
    expect(video).to_have_attribute("src", re.compile(r"^https?://"))
    expect(video).to_have_attribute("poster", re.compile(r"^https?://"))
    page.wait_for_function("video => video.readyState >= 1 && video.duration > 0", arg=video.element_handle())
    screenshot(page, "21-stack-video-result", full_page=False)


def test_cancel_a_queued_task(page: Page, stack: LocalStack) -> None:
    model_id, display_name = new_image_model(stack, concurrency=1)
    with stack.simulator_config(image_latency_s=30.0):  # the first task holds the only slot meanwhile
        log_in(page, stack.web_url, stack.demo.username, stack.demo.password)
        form = page.locator(IMAGE_FORM)
        form.get_by_label("Model").select_option(label=display_name)
        form.get_by_label("Prompt").fill("holds the slot")
        form.get_by_role("button", name="Generate image").click()
        expect(newest_card(page).locator(".status-pill")).to_have_text("Running", timeout=RESULT_TIMEOUT_MS)
        form.get_by_label("Prompt").fill("waits for the slot")
        form.get_by_role("button", name="Generate image").click()
        waiting = page.locator(".task-card", has_text="waits for the slot")
        expect(waiting.locator(".status-pill")).to_have_text("Queued")
        waiting.get_by_role("button", name="Cancel task").click()
        expect(waiting.locator(".status-pill")).to_have_text("Cancelled")
        expect(waiting.get_by_role("button", name="Cancel task")).to_be_hidden()
        screenshot(page, "22-stack-cancelled", full_page=False)

    task_id = waiting.get_attribute("data-task-id")
    response = httpx.get(f"{stack.api_url}/api/tasks/{task_id}", headers=api_headers(stack, stack.demo))
    assert (response.json()["status"], response.json()["model_id"]) == ("cancelled", model_id)


def test_admin_lowers_a_quota_and_the_user_sees_it(page: Page, new_page, stack: LocalStack,
                                                   console) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of 429")
    model_id, display_name = new_image_model(stack, daily_quota=50)
    admin = new_page()
    log_in(admin, stack.web_url, stack.admin.username, stack.admin.password)
    admin.get_by_role("link", name="Models").click()
    row = admin.locator(f"tr[data-model-id='{model_id}']")
    expect(row).to_contain_text("0 / 50")
    row.get_by_role("button", name=f"Edit {model_id}").click()
    admin.get_by_role("dialog").get_by_label("Daily quota (all users)").fill("0")
    admin.get_by_role("dialog").get_by_role("button", name="Save changes").click()
    expect(row).to_contain_text("0 / 0")

    log_in(page, stack.web_url, stack.demo.username, stack.demo.password)
    form = page.locator(IMAGE_FORM)
    form.get_by_label("Model").select_option(label=display_name)
    form.get_by_label("Prompt").fill("one too many")
    form.get_by_role("button", name="Generate image").click()
    expect(form.locator(".form-errors")).to_contain_text("Quota reached")
    screenshot(page, "23-stack-quota-error", full_page=False)


def own_task(stack: LocalStack, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}/api/tasks/{task_id}", headers=api_headers(stack, stack.demo))
    response.raise_for_status()
    return response.json()


def test_png_image_on_seedream_5_lite(page: Page, stack: LocalStack) -> None:
    log_in(page, stack.web_url, stack.demo.username, stack.demo.password)
    form = page.locator(IMAGE_FORM)
    form.get_by_label("Model").select_option(label="Seedream 5.0 lite")
    form.get_by_label("Prompt").fill("A tide pool at noon, as a PNG")
    form.get_by_label("Output format").select_option("png")
    form.get_by_role("button", name="Generate image").click()
    expect(page.locator(".toast").first).to_have_text("Image task queued.")

    item = newest_card(page)
    expect(item.locator(".task-prompt")).to_have_text("A tide pool at noon, as a PNG")
    expect(item.locator(".status-pill")).to_have_text("Succeeded", timeout=RESULT_TIMEOUT_MS)
    image = item.locator(".gallery img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    task = own_task(stack, str(item.get_attribute("data-task-id")))
    assert (task["params"]["output_format"], task["result"]["format"]) == ("png", "png")
    picture = httpx.get(str(image.get_attribute("src")))
    assert picture.content.startswith(b"\x89PNG\r\n\x1a\n")
    screenshot(page, "24-stack-png-image", full_page=False)


def test_video_with_audio_as_a_draft_then_rendered_in_full(page: Page, stack: LocalStack) -> None:
    log_in(page, stack.web_url, stack.demo.username, stack.demo.password)
    form = open_video_tab(page)
    form.get_by_label("Model").select_option(label="Seedance 1.5 pro")
    form.get_by_label("Prompt (optional with a first frame)").fill("A street band plays, draft first")
    expect(form.get_by_label("Generate audio")).to_be_checked()
    form.get_by_label("Duration (seconds)").fill("4")
    form.get_by_label(re.compile("^Draft first")).check()
    form.get_by_role("button", name="Generate video").click()

    draft_card = newest_card(page)
    expect(draft_card.locator(".task-prompt")).to_have_text("A street band plays, draft first")
    expect(draft_card.locator(".status-pill")).to_have_text("Succeeded", timeout=RESULT_TIMEOUT_MS)
    draft_id = str(draft_card.get_attribute("data-task-id"))
    draft = own_task(stack, draft_id)
    assert (draft["params"]["draft"], draft["params"]["generate_audio"], draft["params"]["resolution"]) == (
        True, True, "480p")
    draft_card.get_by_role("button", name="Render in full").click()
    expect(page.locator(".toast").last).to_have_text("Render queued as a new task.")

    rendered_card = page.locator(".task-card", has_text="rendered from a draft")
    expect(rendered_card.locator(".status-pill")).to_have_text("Succeeded", timeout=RESULT_TIMEOUT_MS)
    rendered = own_task(stack, str(rendered_card.get_attribute("data-task-id")))
    assert rendered["render_of"] == draft_id and rendered["id"] != draft_id
    assert rendered_card.get_by_role("button", name="Render in full").count() == 0
    with av.open(io.BytesIO(httpx.get(rendered["video_url"]).content)) as video:
        assert len(video.streams.audio) == 1
    screenshot(page, "25-stack-draft-rendered", full_page=False)


def test_admin_sees_everyones_tasks_and_cancels_one_as_an_operator(page: Page, stack: LocalStack,
                                                                   console) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of 409")
    model_id, _ = new_image_model(stack, concurrency=1)
    demo = api_headers(stack, stack.demo)
    with stack.simulator_config(image_latency_s=30.0):  # the first task holds the only slot meanwhile
        created = [httpx.post(f"{stack.api_url}/api/tasks", headers=demo, json={
            "type": "image", "model_id": model_id, "prompt": prompt}).json()["id"]
            for prompt in ("holds the slot", "waits for the slot")]
        running, waiting = created
        wait_for(lambda: own_task(stack, running)["status"] == "running", timeout_s=60)
        log_in(page, stack.web_url, stack.admin.username, stack.admin.password)
        page.get_by_role("link", name="All tasks").click()
        filters = page.get_by_role("search", name="Filter tasks")
        filters.get_by_label("User").fill(stack.demo.username)
        filters.get_by_label("Model").select_option(model_id)
        rows = page.locator("tbody tr[data-task-id]")
        expect(rows).to_have_count(2)
        expect(rows.first).to_have_attribute("data-task-id", waiting)
        expect(rows.first).to_contain_text(stack.demo.username)

        # The worker still holds the running one: the API refuses, and the page says why.
        page.get_by_role("button", name=f"Cancel {running}").click()
        page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
        expect(page.locator(".toast.error").last).to_contain_text("A worker still holds this task")

        page.get_by_role("button", name=f"Cancel {waiting}").click()
        page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
        cancelled = page.locator(f"tr[data-task-id='{waiting}']")
        expect(cancelled.locator(".status-pill")).to_have_text("Cancelled")
        expect(cancelled.locator("td[data-label='User']")).to_have_text(stack.demo.username)
        screenshot(page, "57-stack-admin-all-tasks", full_page=False)
    assert own_task(stack, waiting)["status"] == "cancelled"


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def test_operations_console_shows_the_stacks_own_figures_dead_letters_and_audit(page: Page,
                                                                                 stack: LocalStack) -> None:
    model_id, _ = new_image_model(stack, concurrency=2)
    admin, demo = api_headers(stack, stack.admin), api_headers(stack, stack.demo)
    httpx.put(f"{stack.api_url}/api/admin/models/{model_id}", headers=admin, json={
        "concurrency": 3, "price": {"currency": "CNY", "per_image": 0.25}}).raise_for_status()
    task_ids = [httpx.post(f"{stack.api_url}/api/tasks", headers=demo, json={
        "type": "image", "model_id": model_id, "prompt": f"console figure {index}"}).json()["id"] for index in range(2)]

    def all_succeeded() -> list[dict[str, Any]] | None:
        tasks = [own_task(stack, task_id) for task_id in task_ids]
        return tasks if all(task["status"] == "succeeded" for task in tasks) else None

    tasks = wait_for(all_succeeded, timeout_s=60)
    cost = sum(task["cost"] for task in tasks)
    longest_run_s = max(seconds_between(task["started_at"], task["finished_at"]) for task in tasks)

    def counted() -> bool:  # the sweeper's roll-up counts them at its next run (the dashboard reads it once)
        answer = httpx.get(f"{stack.api_url}/api/admin/metrics", headers=admin, timeout=30.0)
        model = next(model for model in answer.json()["models"] if model["model_id"] == model_id)
        return model["outcomes"].get("succeeded") == len(task_ids)

    wait_for(counted, timeout_s=30)
    # A lane's dead letter naming a task that has finished since: a replay drops it.
    sqs = boto3.session.Session().client(
        "sqs", endpoint_url=stack.moto_url, region_name=AWS_REGION,
        aws_access_key_id=FAKE_AWS_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    dlq_url = sqs.get_queue_url(QueueName=lane_named("image").dlq_name(stack.config.prefix))["QueueUrl"]
    message_id = sqs.send_message(QueueUrl=dlq_url, MessageBody=json.dumps({"task_id": task_ids[0]}))["MessageId"]

    log_in(page, stack.web_url, stack.admin.username, stack.admin.password)
    page.get_by_role("link", name="Dashboard").click()
    card = page.locator(f".model-card[data-model-id='{model_id}']")
    expect(card.locator("[data-outcome='succeeded']")).to_have_text("succeeded2")
    expect(card.locator("[data-stat='queued']")).to_have_text("0")
    expect(card.locator("[data-stat='running']")).to_have_text("0 / 3")
    expect(card.locator("[data-stat='cost']")).to_have_text(f"{cost:.2f} CNY")
    # p95 of two runs is the longer one, shown as its histogram bucket's middle (within 10 %), to a tenth of a second.
    run_p95 = card.locator("[data-stat='run-p95']")
    expect(run_p95).to_have_text(re.compile(r"^\d+(\.\d)?s$"))
    assert abs(float(run_p95.inner_text().removesuffix("s")) - longest_run_s) <= 0.1 * longest_run_s + 0.05
    queue = card.locator("figure[data-chart='queue']")
    expect(queue.locator(".uplot canvas")).to_have_count(1)
    assert {row[-1] for row in values_table(queue)} == {"3"}  # the concurrency line, as changed
    costs = page.locator("figure[data-chart='cost'][data-currency='CNY']")
    expect(costs.locator(".uplot canvas")).to_have_count(1)
    cost_rows = values_table(costs)
    column = costs.locator("thead th").all_text_contents().index(model_id)
    assert cost_rows[-1][column] == str(round(cost, 2))  # today's cost of the model
    screenshot(page, "58-stack-dashboard")

    page.get_by_role("link", name="Dead letters").click()
    letter = page.locator(f".dlq-queue[data-lane='image'] tr[data-message-id='{message_id}']")
    expect(letter).to_contain_text(task_ids[0])
    expect(letter.locator(".status-pill")).to_have_text("Succeeded")
    screenshot(page, "59-stack-dead-letters")
    letter.get_by_role("button", name=f"Replay {message_id}").click()
    page.get_by_role("dialog").get_by_role("button", name="Replay").click()
    expect(page.locator(".replay-result")).to_have_text("image: replayed 0, dropped 1 (task_finished: 1).")
    expect(letter).to_be_hidden()

    page.get_by_role("link", name="Audit").click()
    update = page.locator("tbody tr[data-action='model.update']", has_text=f"model:{model_id}")
    expect(update).to_contain_text(stack.admin.username)
    expect(update).to_contain_text("concurrency: 2 → 3")
    replay = page.locator("tbody tr[data-action='dlq.replay']").first
    expect(replay).to_contain_text("dlq:image")
    expect(replay).to_contain_text('dropped_reasons: {"task_finished":1}')
    screenshot(page, "60-stack-audit", full_page=False)
