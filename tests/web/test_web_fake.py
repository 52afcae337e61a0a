"""The web app's screens in headless Chromium, against the in-memory fake API (tests/web/fake_api.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from chalicelib.ark.capabilities import SEED
from tests.polling import wait_for
from tests.web.conftest import PHONE, ConsoleWatch, screenshot
from tests.web.fake_api import ADMIN, DEMO, FakeArkflow, FakeStack
from tests.web.ui import IMAGE_FORM, card, field, file_payload, log_in, open_video_tab, png

pytestmark = pytest.mark.browser

# Chromium reports every 4xx/5xx response in the console; tests that provoke one on purpose allow it.
HTTP_ERROR_IN_CONSOLE = r"Failed to load resource: the server responded with a status of {}"


def test_log_in_reload_and_log_out(page: Page, fake_stack: FakeStack, fake: FakeArkflow,
                                   console: ConsoleWatch) -> None:
    console.allow(HTTP_ERROR_IN_CONSOLE.format(401))
    page.goto(fake_stack.web_url)
    expect(page.get_by_role("heading", name="Log in to arkflow")).to_be_visible()
    screenshot(page, "01-login")

    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".form-errors")).to_contain_text("Wrong username or password")
    expect(page.get_by_label("Password")).to_have_value("")

    log_in(page, fake_stack.web_url, *DEMO)
    expect(page.get_by_role("heading", name="Create")).to_be_visible()
    expect(page.get_by_role("link", name="Models")).to_be_hidden()

    page.reload()
    expect(page.locator(".whoami")).to_contain_text("demo")
    expect(page.get_by_role("heading", name="Your tasks")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You have logged out.")).to_be_visible()
    wait_for(lambda: fake.requests_to("POST", "/api/users/logout") == 1)
    page.reload()
    expect(page.get_by_role("heading", name="Log in to arkflow")).to_be_visible()


def test_expired_session_sends_back_to_login(page: Page, fake_stack: FakeStack, fake: FakeArkflow,
                                             console: ConsoleWatch) -> None:
    console.allow(HTTP_ERROR_IN_CONSOLE.format(401))
    log_in(page, fake_stack.web_url, *DEMO)
    fake.expire_sessions()
    page.get_by_label("Type").select_option("video")
    expect(page.get_by_text("Your session has expired. Please log in again.")).to_be_visible()
    expect(page.locator(".topbar")).to_be_hidden()

    page.reload()
    expect(page.get_by_role("heading", name="Log in to arkflow")).to_be_visible()


def test_image_form_checks_ark_limits_before_sending(page: Page, fake_stack: FakeStack, fake: FakeArkflow,
                                                    tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"  # a path, not a buffer: Playwright hands paths to Chromium without copying
    huge.write_bytes(b"\x89PNG" + bytes(12 * 1024 * 1024))
    log_in(page, fake_stack.web_url, *DEMO)
    form = page.locator(IMAGE_FORM)
    form.get_by_text("Custom", exact=True).click()
    form.get_by_label("Width").fill("1000")
    form.get_by_label("Height").fill("1000")
    form.get_by_label("Images to generate").fill("16")
    form.get_by_role("button", name="Generate image").click()

    expect(field(form, "prompt").locator(".field-error")).to_have_text("Describe the image you want.")
    expect(field(form, "size").locator(".field-error")).to_contain_text("Total pixels must be between")
    expect(field(form, "max_images").locator(".field-error")).to_contain_text("between 1 and 15")
    expect(form.get_by_label("Prompt")).to_be_focused()
    screenshot(page, "03-image-form-errors")

    form.get_by_label("Prompt").fill("A lighthouse")
    form.get_by_label("Width").fill("8192")
    form.get_by_label("Height").fill("450")
    form.get_by_label("Images to generate").fill("15")
    references = field(form, "images")
    form.locator("input[type=file]").set_input_files(file_payload("notes.txt", b"plain text", "text/plain"))
    expect(references.locator(":scope > .field-error")).to_contain_text("notes.txt: txt files are not accepted")
    form.locator("input[type=file]").set_input_files(huge)
    expect(references.locator(":scope > .field-error")).to_have_text("huge.png is 12 MB; the limit is 10 MB.")
    form.locator("input[type=file]").set_input_files(file_payload("sliver.png", png(15, 300)))
    expect(references.locator(":scope > .field-error")).to_have_text("Width ÷ height must be between 1/16 and 16.")
    form.get_by_label("Reference image link").fill("http://example.com/cat.png")
    form.get_by_role("button", name="Add link").click()
    expect(references.locator(":scope > .field-error")).to_have_text("Image links must start with https://.")
    expect(form.get_by_label("Reference image link")).to_have_value("http://example.com/cat.png")

    form.locator("input[type=file]").set_input_files([file_payload("tiny.png", png(32, 32))])
    expect(form.locator(".reference")).to_have_count(1)
    form.get_by_role("button", name="Generate image").click()
    expect(field(form, "size").locator(".field-error")).to_have_text("Width ÷ height must be between 1/16 and 16.")
    expect(field(form, "max_images").locator(".field-error")).to_contain_text("with 1 references choose at most 14")
    assert fake.requests_to("POST", "/api/tasks") == 0


def test_image_task_with_references_goes_live_to_a_gallery(page: Page, fake_stack: FakeStack,
                                                           fake: FakeArkflow) -> None:
    log_in(page, fake_stack.web_url, *DEMO)
    form = page.locator(IMAGE_FORM)
    form.get_by_label("Prompt").fill("Two views of a red fox in snow")
    form.locator("input[type=file]").set_input_files([
        file_payload("small.png", png(64, 48)),
        file_payload("large.png", png(400, 300, noisy=True)),
    ])
    form.get_by_label("Reference image link").fill("https://images.example.com/fox.jpg")
    form.get_by_label("Reference image link").press("Enter")
    expect(form.locator(".reference")).to_have_count(3)
    expect(form.locator(".reference").nth(0)).to_contain_text("small.png")
    form.get_by_text("4K", exact=True).click()
    form.get_by_label("Images to generate").fill("2")
    form.get_by_role("button", name="Generate image").click()
    expect(page.locator(".toast")).to_have_text("Image task queued.")

    [task] = fake.tasks_of("demo")
    assert task["params"] == {"size": "4K", "max_images": 2, "watermark": True}  # Seedream's own default
    inline, uploaded, link = task["images"]
    assert inline.startswith("data:image/png;base64,")
    assert uploaded.startswith("upload:") and fake.state.uploads[uploaded.removeprefix("upload:")]["received"]
    assert link == "https://images.example.com/fox.jpg"

    item = card(page, task["id"])
    expect(item.locator(".status-pill")).to_have_text("Queued")
    expect(item.locator(".queue-position")).to_have_text("#1 in queue")
    expect(item.get_by_role("button", name="Cancel task")).to_be_visible()

    fake.set_status(task["id"], "running")
    expect(item.locator(".status-pill")).to_have_text("Running")
    expect(item.get_by_role("button", name="Cancel task")).to_be_hidden()
    expect(item.locator(".elapsed")).to_have_text(re.compile(r"running \d+s"))

    fake.succeed(task["id"], image_errors=[{"index": 2, "code": "OutputImageSensitiveContentDetected",
                                            "message": "The output image may contain sensitive content."}],
                 cost=0.5, currency="CNY", usage={"generated_images": 2, "output_tokens": 32768,
                                                  "total_tokens": 32768})
    expect(item.locator(".status-pill")).to_have_text("Succeeded")
    expect(item.locator(".task-cost")).to_have_text("Cost 0.50 CNY")
    expect(item.locator(".gallery img")).to_have_count(2)
    expect(item.locator(".task-warning")).to_contain_text(
        "Image 3: The output image may contain sensitive content. OutputImageSensitiveContentDetected")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "04-studio-image-result", full_page=False)

    thumbnail = item.get_by_role("button", name="View image 1 of 2 full size")
    thumbnail.click()
    viewer = page.get_by_role("dialog")
    expect(viewer.get_by_role("heading")).to_have_text("Image 1 of 2")
    expect(viewer.locator(".viewer-image")).to_have_attribute("src", re.compile(rf"/media/{task['id']}-1\.png$"))
    expect(viewer.get_by_role("link", name="Download")).to_have_attribute("href", re.compile(r"-1\.png$"))
    screenshot(page, "05-image-viewer", full_page=False)
    page.keyboard.press("ArrowRight")
    expect(viewer.get_by_role("heading")).to_have_text("Image 2 of 2")
    expect(viewer.get_by_role("link", name="Download")).to_have_attribute("href", re.compile(r"-2\.png$"))
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(thumbnail).to_be_focused()


def test_video_form_limits_and_player(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    log_in(page, fake_stack.web_url, *DEMO)
    form = open_video_tab(page)
    expect(form.get_by_label("Resolution")).to_have_value("720p")  # the model's default
    form.get_by_label("Aspect ratio").select_option("adaptive")
    form.get_by_label("Duration (seconds)").fill("13")
    form.get_by_label("Seed").fill("4294967296")
    form.get_by_role("button", name="Generate video").click()
    expect(field(form, "prompt").locator(".field-error")).to_have_text("Describe the video, or give a first frame.")
    expect(field(form, "params.ratio").locator(".field-error")).to_contain_text("add one or pick a ratio")
    expect(field(form, "params.duration").locator(".field-error")).to_contain_text("from 2 to 12")
    expect(field(form, "params.seed").locator(".field-error")).to_contain_text(f"-1 to {SEED.maximum}")
    screenshot(page, "06-video-form-errors")

    first = field(form, "images[0]")
    first.locator("input[type=file]").set_input_files([file_payload("small.png", png(200, 200))])
    expect(first.locator(".field-error")).to_contain_text("between 300 and 6000 px")
    first.locator("input[type=file]").set_input_files([file_payload("first.png", png(640, 360))])
    expect(first.locator(".reference-name")).to_have_text(re.compile(r"^first\.png · \d+ KB · 640×360$"))
    last = field(form, "images[1]")
    last.get_by_label("Last frame (optional) link").fill("https://frames.example.com/last.png")
    last.get_by_role("button", name="Add link").click()
    form.get_by_label("Duration (seconds)").fill("6")
    form.get_by_label("Seed").fill("42")
    form.get_by_label("Keep the camera fixed").check()
    form.get_by_role("button", name="Generate video").click()
    expect(page.locator(".toast")).to_have_text("Video task queued.")

    [task] = fake.tasks_of("demo")
    assert task["type"] == "video" and task["prompt"] is None
    assert task["params"] == {"resolution": "720p", "ratio": "adaptive", "duration": 6, "seed": 42,
                              "camera_fixed": True, "return_last_frame": True, "watermark": False,
                              "service_tier": "default"}
    assert task["images"][0].startswith("data:image/png;base64,")
    assert task["images"][1] == "https://frames.example.com/last.png"

    fake.set_status(task["id"], "running", ark_queued=True)
    item = card(page, task["id"])
    expect(item.get_by_role("button", name="Cancel task")).to_be_visible()
    fake.succeed(task["id"])
    video = item.locator("video")
    expect(video).to_have_attribute("src", re.compile(rf"/media/{task['id']}\.mp4$"))
    expect(video).to_have_attribute("poster", re.compile(rf"/media/{task['id']}-last\.png$"))
    expect(item.get_by_role("link", name="Download video")).to_be_visible()
    page.wait_for_function("() => document.querySelector('video').readyState >= 1")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "07-studio-video-result", full_page=False)


def test_api_errors_show_next_to_their_fields(page: Page, fake_stack: FakeStack, fake: FakeArkflow,
                                              console: ConsoleWatch) -> None:
    console.allow(HTTP_ERROR_IN_CONSOLE.format("(400|409|429)"))
    log_in(page, fake_stack.web_url, *DEMO)
    form = open_video_tab(page)
    form.get_by_label("Prompt (optional with a first frame)").fill("A cat")
    fake.fail_next("POST", "/api/tasks", 400, "validation_error", "2 invalid field(s)", [
        {"field": "params.duration", "message": "Input should be less than or equal to 12", "type": "less_than_equal"},
        {"field": "params.frames", "message": "must be 25 + 4n", "type": "frames"},
    ])
    form.get_by_role("button", name="Generate video").click()
    expect(field(form, "params.duration").locator(".field-error")).to_have_text(
        "Input should be less than or equal to 12")
    expect(form.locator(".form-errors")).to_contain_text("params.frames: must be 25 + 4n")

    form.get_by_role("button", name="Generate video").click()  # the same request, accepted this time
    expect(page.locator(".toast")).to_have_text("Video task queued.")
    expect(field(form, "params.duration").locator(".field-error")).to_be_hidden()

    fake.state.models["seedance-1-0-pro"]["daily_quota"] = 1
    form.get_by_role("button", name="Generate video").click()
    expect(form.locator(".form-errors")).to_contain_text("Quota reached")
    expect(form.locator(".form-errors")).to_contain_text("The daily quota of 'seedance-1-0-pro' is used up.")
    screenshot(page, "08-quota-error")

    fake.state.models["seedance-1-0-pro"].update(enabled=False, daily_quota=100)
    form.get_by_role("button", name="Generate video").click()
    expect(form.locator(".form-errors")).to_contain_text("Model disabled")
    expect(form.get_by_label("Model").locator("option:checked")).to_have_text("Seedance 1.0 pro (disabled)")
    form.get_by_role("button", name="Generate video").click()
    expect(field(form, "model_id").locator(".field-error")).to_have_text("Choose a model.")
    assert fake.requests_to("POST", "/api/tasks") == 4


def test_cancel_a_queued_task(page: Page, fake_stack: FakeStack, fake: FakeArkflow,
                              console: ConsoleWatch) -> None:
    console.allow(HTTP_ERROR_IN_CONSOLE.format(409))
    queued = fake.add_task("demo", prompt="waiting in line")
    racing = fake.add_task("demo", prompt="about to start")
    log_in(page, fake_stack.web_url, *DEMO)

    card(page, queued["id"]).get_by_role("button", name="Cancel task").click()
    expect(card(page, queued["id"]).locator(".status-pill")).to_have_text("Cancelled")
    expect(card(page, queued["id"]).get_by_role("button", name="Cancel task")).to_be_hidden()
    assert fake.task(queued["id"])["status"] == "cancelled"

    # The worker claims it between the list being shown and the click.
    fake.set_status(racing["id"], "running", broadcast=False)
    card(page, racing["id"]).get_by_role("button", name="Cancel task").click()
    expect(page.locator(".toast.error")).to_contain_text("This task can no longer be cancelled")
    expect(card(page, racing["id"]).locator(".status-pill")).to_have_text("Running")
    expect(card(page, racing["id"]).get_by_role("button", name="Cancel task")).to_be_hidden()

    card(page, queued["id"]).get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete task").click()
    expect(card(page, queued["id"])).to_have_count(0)
    assert queued["id"] not in fake.state.tasks


def test_live_list_reconnects_and_catches_up(page: Page, fake_stack: FakeStack, fake: FakeArkflow,
                                             console: ConsoleWatch) -> None:
    console.allow(r"WebSocket connection to .* failed")
    task = fake.add_task("demo", prompt="before the drop")
    log_in(page, fake_stack.web_url, *DEMO)
    expect(card(page, task["id"]).locator(".status-pill")).to_have_text("Queued")
    # Drop the socket only once it is open: one still in its handshake would slip past the drop.
    wait_for(lambda: fake.connected_sockets() == 1)

    fake.drop_sockets(refuse_new=True)
    expect(page.locator(".live-status")).to_have_text(re.compile(r"Reconnecting in \d+ s"))
    fake.set_status(task["id"], "running")  # nobody is connected: this update is lost
    fake.succeed(task["id"])
    lists_before = fake.requests_to("GET", "/api/tasks")
    fake.allow_sockets()
    expect(page.locator(".live-status")).to_have_text("Live", timeout=15_000)
    expect(card(page, task["id"]).locator(".status-pill")).to_have_text("Succeeded")
    assert fake.requests_to("GET", "/api/tasks") > lists_before

    # An update about a task the page has never seen makes it refetch the list.
    other = fake.add_task("demo", prompt="created in another tab")
    fake.set_status(other["id"], "running")
    expect(card(page, other["id"]).locator(".status-pill")).to_have_text("Running")

    # A stale update (older version) is ignored; updates arrive in order, so once the next one shows, the
    # stale one has been handled.
    fake.broadcast("demo", {"type": "task_update", "data": {"id": other["id"], "status": "queued", "version": 1,
                                                            "updated_at": other["updated_at"]}})
    fake.set_status(task["id"], "expired")
    expect(card(page, task["id"]).locator(".status-pill")).to_have_text("Expired")
    expect(card(page, other["id"]).locator(".status-pill")).to_have_text("Running")
    fake.set_status(other["id"], "failed", error={"code": "OutputImageSensitiveContentDetected",
                                                  "message": "The output image may contain sensitive content."})
    item = card(page, other["id"])
    expect(item.locator(".status-pill")).to_have_text("Failed")
    expect(item.locator(".task-error")).to_contain_text("The output image may contain sensitive content.")
    expect(item.locator(".task-error code")).to_have_text("OutputImageSensitiveContentDetected")


def test_filters_and_load_more(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    for index in range(24):
        kind = "video" if index % 3 == 0 else "image"
        model = "seedance-1-0-pro" if kind == "video" else "seedream-4-5"
        fake.add_task("demo", type=kind, model_id=model, prompt=f"task number {index}")
    fake.add_task("other", prompt="somebody else's")
    log_in(page, fake_stack.web_url, *DEMO)
    cards = page.locator(".task-card")
    expect(cards).to_have_count(20)
    expect(cards.first).to_contain_text("task number 23")
    page.get_by_role("button", name="Load more").click()
    expect(cards).to_have_count(24)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    page.get_by_label("Type").select_option("video")
    expect(cards).to_have_count(8)
    expect(page.locator(".task-card .badge")).to_have_text(["Video"] * 8)
    page.get_by_label("Status").select_option("failed")
    expect(cards).to_have_count(0)
    expect(page.get_by_text("No tasks match these filters.")).to_be_visible()

    video_task = next(task for task in fake.tasks_of("demo") if task["type"] == "video")
    fake.set_status(video_task["id"], "failed", error={"code": "InternalServiceError", "message": "Ark failed."})
    expect(cards).to_have_count(1)
    expect(cards.first.locator(".task-error")).to_contain_text("Ark failed.")


def test_user_text_is_shown_as_text(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    hostile = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    task = fake.add_task("demo", prompt=hostile, status="failed",
                         error={"code": "<i>x</i>", "message": "<script>window.pwned=2</script>"})
    log_in(page, fake_stack.web_url, *DEMO)
    item = card(page, task["id"])
    expect(item.locator(".task-prompt")).to_have_text(hostile)
    expect(item.locator(".task-error")).to_contain_text("<script>window.pwned=2</script>")
    assert item.locator("img, b, script, i").count() == 0
    assert page.evaluate("window.pwned") is None


def test_admin_manages_models(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    running = fake.add_task("demo", prompt="busy")
    fake.set_status(running["id"], "running")
    fake.state.usage["seedream-4-5"] = 42
    log_in(page, fake_stack.web_url, *ADMIN)
    page.get_by_role("link", name="Models").click()
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    seedream = page.locator("tr[data-model-id='seedream-4-5']")
    expect(seedream).to_contain_text("1 / 4")
    expect(seedream).to_contain_text("42 / 500")
    screenshot(page, "09-admin-models")

    seedream.get_by_role("button", name="Edit seedream-4-5").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Model ID")).to_have_attribute("readonly", "")
    dialog.get_by_label("Concurrency (tasks running at once)").fill("0")
    dialog.get_by_role("button", name="Save changes").click()
    expect(field(dialog, "concurrency").locator(".field-error")).to_have_text("A whole number, at least 1.")
    dialog.get_by_label("Concurrency (tasks running at once)").fill("8")
    dialog.get_by_label("Daily quota per user").fill("3")
    screenshot(page, "10-admin-model-dialog", full_page=False)
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog).to_be_hidden()
    expect(seedream).to_contain_text("1 / 8")
    expect(seedream).to_contain_text("3 / day")
    model = fake.state.models["seedream-4-5"]
    assert (model["concurrency"], model["user_daily_quota"], model["max_running_per_user"]) == (8, 3, None)
    assert model["defaults"] == {"size": "2K"}

    seedream.get_by_role("button", name="Disable seedream-4-5").click()
    expect(seedream.locator(".status-pill")).to_have_text("Disabled")
    assert fake.state.models["seedream-4-5"]["enabled"] is False

    page.get_by_role("button", name="New model").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Model ID").fill("seedream-4-0")
    dialog.get_by_label("Upstream Ark model").fill("doubao-seedream-4-0-250828")
    dialog.get_by_label("Concurrency (tasks running at once)").fill("2")
    dialog.get_by_label("Defaults (JSON)").fill('{"size": 2K}')
    dialog.get_by_role("button", name="Create model").click()
    expect(field(dialog, "defaults").locator(".field-error")).to_contain_text("A JSON object")
    dialog.get_by_label("Defaults (JSON)").fill('{"size": "4K"}')
    dialog.get_by_role("button", name="Create model").click()
    created = page.locator("tr[data-model-id='seedream-4-0']")
    expect(created).to_contain_text("0 / 100")
    assert fake.state.models["seedream-4-0"]["defaults"] == {"size": "4K"}

    created.get_by_role("button", name="Delete seedream-4-0").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete model").click()
    expect(created).to_have_count(0)
    assert "seedream-4-0" not in fake.state.models


def test_admin_sees_a_models_lifecycle_and_moves_it_to_an_endpoint(page: Page, fake_stack: FakeStack,
                                                                     fake: FakeArkflow, console: ConsoleWatch) -> None:
    console.allow(HTTP_ERROR_IN_CONSOLE.format(409))  # the refused change, before the admin confirms
    fake.state.models["seedream-4-5"].update(status="deprecated", replacement="seedream-5.0-lite",
                                             upstream_unavailable={"at": "2026-01-01T00:00:00Z",
                                                                   "code": "ModelNotOpen"})
    fake.state.incompatible_queued["seedream-4-5"] = 2
    log_in(page, fake_stack.web_url, *ADMIN)
    page.get_by_role("link", name="Models").click()
    seedream = page.locator("tr[data-model-id='seedream-4-5']")
    expect(seedream.locator("[data-note='lifecycle']")).to_have_text("Deprecated at Ark; use seedream-5.0-lite")
    unavailable = seedream.locator("[data-note='unavailable']")
    expect(unavailable).to_contain_text(re.compile(r"^Ark: not available \(ModelNotOpen\) since \S"))
    expect(unavailable.locator("time")).to_have_attribute("datetime", "2026-01-01T00:00:00Z")

    seedream.get_by_role("button", name="Edit seedream-4-5").click()
    dialog = page.get_by_role("dialog", name="Edit seedream-4-5")
    dialog.get_by_label("Upstream Ark model").fill("ep-20260101000000-abcde")
    dialog.get_by_label("Model the endpoint serves").fill("seedream-5.0-lite")
    dialog.get_by_role("button", name="Save changes").click()
    confirm = page.get_by_role("dialog", name="Queued tasks cannot move")
    expect(confirm).to_contain_text("2 queued tasks")
    confirm.get_by_role("button", name="Fail 2 and save").click()
    expect(dialog).to_be_hidden()
    model = fake.state.models["seedream-4-5"]
    assert (model["upstream_model"], model["family"]) == ("ep-20260101000000-abcde", "seedream-5.0-lite")
    assert "force" not in model


def test_admin_manages_users(page: Page, new_page, fake_stack: FakeStack, fake: FakeArkflow,
                             console: ConsoleWatch) -> None:
    console.allow(HTTP_ERROR_IN_CONSOLE.format(401))
    log_in(page, fake_stack.web_url, *ADMIN)
    page.get_by_role("link", name="Users").click()
    page.get_by_role("button", name="New user").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Username").fill("carol")
    dialog.get_by_label("Password").fill("short")
    dialog.get_by_role("button", name="Create user").click()
    expect(field(dialog, "password").locator(".field-error")).to_have_text("At least 8 characters.")
    dialog.get_by_label("Password").fill("carol-pass-1")
    dialog.get_by_role("button", name="Create user").click()
    carol = page.locator("tr[data-username='carol']")
    expect(carol).to_contain_text("Active")

    carol.get_by_label("Role of carol").select_option("admin")
    expect(page.locator(".toast").last).to_have_text("carol is now admin.")
    assert fake.state.users["carol"]["role"] == "admin"

    carol.get_by_role("button", name="Reset password for carol").click()
    page.get_by_role("dialog").get_by_label("New password").fill("carol-pass-2")
    page.get_by_role("dialog").get_by_role("button", name="Set password").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert fake.state.passwords["carol"] == "carol-pass-2"

    carol.get_by_role("button", name="Disable carol").click()
    expect(carol.locator(".status-pill")).to_have_text("Disabled")
    expect(page.locator("tr[data-username='admin']").get_by_role("button", name="Delete admin")).to_be_disabled()
    screenshot(page, "11-admin-users")

    other = new_page()
    other.goto(fake_stack.web_url)
    other.get_by_label("Username").fill("carol")
    other.get_by_label("Password").fill("carol-pass-2")
    other.get_by_role("button", name="Log in").click()
    expect(other.locator(".form-errors")).to_contain_text("Wrong username or password")

    carol.get_by_role("button", name="Delete carol").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete user").click()
    expect(carol).to_have_count(0)
    assert "carol" not in fake.state.users


def test_admin_pages_are_for_admins_only(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    log_in(page, fake_stack.web_url, *DEMO)
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(["Studio", "API"])
    screens = {"models": "Models", "dashboard": "Dashboard", "tasks": "All tasks", "dlq": "Dead letters",
               "audit": "Audit log"}
    for screen, title in screens.items():
        page.goto(f"{fake_stack.web_url}/#/admin/{screen}")
        expect(page).to_have_title(f"{title} · arkflow")
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    assert fake.requests_to("GET", "/api/admin/.*") == 0


def test_keyboard_only_use(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    task = fake.add_task("demo", prompt="done", status="succeeded")
    page.goto(fake_stack.web_url)
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type("demo")
    page.keyboard.press("Tab")
    page.keyboard.type("demo-pass")
    page.keyboard.press("Enter")
    expect(page.locator(".live-status")).to_have_text("Live")

    image_tab = page.get_by_role("tab", name="Image")
    image_tab.focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Video")).to_be_focused()
    expect(page.get_by_role("tab", name="Video")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Tab")
    focused_outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focused_outline == "solid"

    delete = card(page, task["id"]).get_by_role("button", name="Delete")
    delete.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(delete).to_be_focused()
    assert task["id"] in fake.state.tasks


def test_readable_on_a_phone(new_page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    task = fake.add_task("demo", prompt="A long prompt " * 20)
    fake.succeed(task["id"])
    phone = new_page(PHONE)
    log_in(phone, fake_stack.web_url, *DEMO)
    expect(card(phone, task["id"]).locator(".gallery img")).to_have_count(1)
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(phone, "12-phone-studio")
    phone.get_by_role("button", name="Log out").click()

    log_in(phone, fake_stack.web_url, *ADMIN)
    phone.get_by_role("link", name="Models").click()
    expect(phone.locator("tr[data-model-id='seedream-4-5']")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(phone, "13-phone-admin-models")
