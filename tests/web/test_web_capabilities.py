"""The task form is built from each model's `capabilities` (GET /api/models): its fields, their values and ranges,
its input modes and its lifecycle; in headless Chromium against the fake API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from chalicelib.ark import capabilities
from tests.polling import wait_for
from tests.web.conftest import ConsoleWatch, screenshot
from tests.web.fake_api import DEMO, FakeArkflow, FakeStack, default_models
from tests.web.ui import IMAGE_FORM, card, field, log_in, open_video_tab

pytestmark = pytest.mark.browser

WEB_JS = Path(__file__).resolve().parents[2] / "web" / "js"
# The modules that build the task forms and check them (others hold timings: toasts, pings, durations).
FORM_MODULES = ("capabilities.js", "validate.js", "forms.js", "uploads.js", "views/create.js", "views/tasks.js")
# What the form asks for another way: a frame count is a duration, which the form takes.
NOT_OFFERED = {"params.frames"}


def shown_fields(form: Locator) -> set[str]:
    """The request paths of the fields a person sees in the form (its "More options" opened), media items aside."""
    more = form.locator("details.more-options")
    if more.count():
        more.evaluate("details => { details.open = true; }")
    return set(form.evaluate("""form => [...form.querySelectorAll("[data-field]")]
        .filter((node) => node.checkVisibility() && !node.matches(".reference"))
        .map((node) => node.dataset.field)"""))


def expected_fields(family: str) -> set[str]:
    """What the table says a form for `family` has: its fields, the prompt and model, and its input media."""
    caps = capabilities.client_capabilities(capabilities.model(family))
    modes = {mode["mode"] for mode in caps["input_modes"]}
    inputs = {"reference_images": {"images"}, "first_frame": {"images[0]"}, "first_last_frame": {"images[1]"},
              "references": {"references"}}
    media = set().union(*(inputs[mode] for mode in modes if mode in inputs))
    return {"model_id", "prompt", *media, *(set(caps["fields"]) - NOT_OFFERED)}


def every_table_model() -> dict[str, dict[str, Any]]:
    """One fake model per family of the capability table, its id the family."""
    template = default_models()["seedream-4-5"]
    return {entry.key: {**template, "model_id": entry.key, "family": entry.key, "display_name": entry.display_name,
                        "type": entry.api, "defaults": {}} for entry in capabilities.MODELS}


def choose(form: Locator, display_name: str) -> None:
    form.get_by_label("Model").select_option(label=display_name)


def test_switching_models_changes_the_visible_fields(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    log_in(page, fake_stack.web_url, *DEMO)
    form = page.locator(IMAGE_FORM)
    assert shown_fields(form) == expected_fields("seedream-4.5")
    expect(field(form, "size").locator("label.radio")).to_have_text(["2K", "4K", "Custom"])
    choose(form, "Seedream 5.0 lite")
    assert shown_fields(form) == expected_fields("seedream-5.0-lite")
    assert {"output_format", "tools"} <= shown_fields(form)
    expect(field(form, "size").locator("label.radio")).to_have_text(["2K", "3K", "Custom"])
    expect(form.get_by_label("Output format").locator("option")).to_have_text(["jpeg", "png"])
    choose(form, "Seedream 4.5")
    assert "output_format" not in shown_fields(form)

    form = open_video_tab(page)
    assert shown_fields(form) == expected_fields("seedance-1.0-pro")
    expect(form.get_by_label("Auto length")).to_have_count(0)
    choose(form, "Seedance 1.5 pro")
    assert shown_fields(form) == expected_fields("seedance-1.5-pro")
    assert {"params.generate_audio", "params.draft"} <= shown_fields(form)
    expect(form.get_by_label("Resolution").locator("option")).to_have_text(["480p", "720p"])
    expect(form.get_by_label("Auto length")).to_be_visible()
    screenshot(page, "30-video-form-seedance-1.5-pro")
    choose(form, "Seedance 2.0")
    assert shown_fields(form) == expected_fields("seedance-2.0")
    assert "references" in shown_fields(form) and "params.seed" not in shown_fields(form)
    choose(form, "Seedance 1.0 pro")
    assert shown_fields(form) == expected_fields("seedance-1.0-pro")


def test_the_forms_ranges_are_the_servers(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    """Every model of the table: what the form offers and hints is its `client_capabilities()`."""
    fake.state.models = every_table_model()
    log_in(page, fake_stack.web_url, *DEMO)
    for entry in capabilities.MODELS:
        caps = capabilities.client_capabilities(entry)
        fields = caps["fields"]
        if entry.api == "image":
            page.get_by_role("tab", name="Image").click()
            form = page.locator(IMAGE_FORM)
            choose(form, entry.display_name)
            size = fields["size"]
            expect(field(form, "size").locator("label.radio")).to_have_text([*size["presets"], "Custom"])
            expect(field(form, "size").locator(".hint")).to_contain_text(
                f"{size['pixels']['min']:,} to {size['pixels']['max']:,} pixels")
            count = form.get_by_label("Images to generate")
            expect(count).to_have_attribute("max", str(fields["max_images"]["max"]))
            expect(field(form, "images").locator(".hint")).to_contain_text(
                f"of {caps['input_modes'][1]['images']['max']}")
        else:
            form = open_video_tab(page)
            choose(form, entry.display_name)
            expect(form.get_by_label("Resolution").locator("option")).to_have_text(
                fields["params.resolution"]["values"])
            expect(form.get_by_label("Aspect ratio").locator("option")).to_have_text(fields["params.ratio"]["values"])
            duration = form.get_by_label("Duration (seconds)")
            expect(duration).to_have_attribute("min", str(fields["params.duration"]["min"]))
            expect(duration).to_have_attribute("max", str(fields["params.duration"]["max"]))
            expect(form.get_by_label("Auto length")).to_have_count(
                0 if fields["params.duration"]["auto"] is None else 1)
        assert shown_fields(form) == expected_fields(entry.key), entry.key
        prompt = form.get_by_label(re.compile("^Prompt"))
        expect(prompt).to_have_attribute("maxlength", str(caps["prompt"]["max_chars"]))


def numbers_in(value: Any) -> set[int]:
    if isinstance(value, bool):
        return set()
    if isinstance(value, int | float):
        return {int(value)} if float(value).is_integer() else set()
    if isinstance(value, dict):
        return set().union(set(), *(numbers_in(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(set(), *(numbers_in(item) for item in value))
    return set()


def test_no_limit_is_restated_in_the_web_app() -> None:
    """The browser's checks read the capabilities the API sends; no limit of the table is written in web/js."""
    limits = set().union(*(numbers_in(capabilities.client_capabilities(entry)) for entry in capabilities.MODELS))
    large = {number for number in limits if number >= 100}
    literals = {name: {int(match.replace("_", "")) for match in re.findall(r"(?<![\w.])\d[\d_]*(?![\w.])",
                                                                        (WEB_JS / name).read_text())}
                for name in FORM_MODULES}
    assert {name: found & large for name, found in literals.items() if found & large} == {}
    assert not (WEB_JS / "limits.js").exists()


def test_a_deprecated_model_warns_and_a_retired_one_is_not_offered(page: Page, fake_stack: FakeStack,
                                                                   fake: FakeArkflow) -> None:
    fake.state.models["seedream-4-5"].update(status="deprecated", replacement="seedream-5.0-lite")
    fake.state.models["seedance-1-0-pro"].update(status="retired", replacement="seedance-1.5-pro")
    log_in(page, fake_stack.web_url, *DEMO)
    form = page.locator(IMAGE_FORM)
    expect(form.get_by_label("Model").locator("option:checked")).to_have_text("Seedream 4.5 (deprecated)")
    notice = form.locator(".model-notice")
    expect(notice).to_contain_text("Seedream 4.5 is deprecated by its provider; use seedream-5.0-lite instead.")
    screenshot(page, "31-deprecated-model")
    notice.get_by_role("button", name="Use Seedream 5.0 lite").click()
    expect(form.get_by_label("Model")).to_have_value("seedream-5-0-lite")
    expect(notice).to_be_hidden()
    assert "output_format" in shown_fields(form)

    video = open_video_tab(page)
    expect(video.get_by_label("Model").locator("option")).to_have_text(["Seedance 1.5 pro", "Seedance 2.0"])


def test_checks_follow_the_models_rules(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    log_in(page, fake_stack.web_url, *DEMO)
    form = open_video_tab(page)
    choose(form, "Seedance 1.5 pro")
    form.get_by_label("Prompt (optional with a first frame)").fill("A drum solo")
    form.get_by_label("Duration (seconds)").fill("3")
    form.get_by_label("Return the last frame as an image").check()
    form.get_by_label("Resolution").select_option("720p")
    form.get_by_label(re.compile("^Draft first")).check()  # a draft is made at 480p, with no last frame
    expect(form.get_by_label("Resolution")).to_have_value("480p")
    expect(form.get_by_label("Return the last frame as an image")).not_to_be_checked()
    form.get_by_label("Resolution").select_option("720p")
    form.get_by_role("button", name="Generate video").click()
    expect(field(form, "params.duration").locator(".field-error")).to_have_text(
        "A whole number from 4 to 12 (or -1 for auto).")
    expect(field(form, "params.draft").locator(".field-error")).to_have_text("Needs resolution 480p.")
    form.get_by_label("Auto length").check()
    expect(form.get_by_label("Duration (seconds)")).to_be_disabled()
    form.get_by_label("Resolution").select_option("480p")
    form.get_by_role("button", name="Generate video").click()
    expect(page.locator(".toast")).to_have_text("Video task queued.")
    [task] = fake.tasks_of("demo")
    assert task["params"]["duration"] == -1 and task["params"]["draft"] is True

    choose(form, "Seedance 2.0")
    media = field(form, "references")
    form.get_by_label("Link type").select_option("audio")
    form.get_by_label("Reference link").fill("https://media.example.com/beat.mp3")
    media.get_by_role("button", name="Add link").click()
    form.get_by_role("button", name="Generate video").click()
    expect(field(form, "references").locator(":scope > .field-error")).to_have_text(
        "Reference audio needs a reference image or video with it.")
    form.get_by_label("Link type").select_option("video")
    form.get_by_label("Reference link").fill("http://media.example.com/dance.mp4")
    media.get_by_role("button", name="Add link").click()
    expect(field(form, "references").locator(":scope > .field-error")).to_have_text(
        "Video links must start with https:// or asset://.")
    form.get_by_label("Reference link").fill("https://media.example.com/dance.mp4")
    media.get_by_role("button", name="Add link").click()
    form.get_by_role("button", name="Generate video").click()
    # The first task's toast may still show the same words: wait for the second task itself.
    newest = max(wait_for(lambda: len(tasks := fake.tasks_of("demo")) == 2 and tasks), key=lambda item: item["id"])
    assert newest["references"] == [{"type": "audio", "url": "https://media.example.com/beat.mp3"},
                                    {"type": "video", "url": "https://media.example.com/dance.mp4"}]
    assert "seed" not in newest["params"] and "draft" not in newest["params"]


def test_png_image_on_seedream_5_lite(page: Page, fake_stack: FakeStack, fake: FakeArkflow) -> None:
    log_in(page, fake_stack.web_url, *DEMO)
    form = page.locator(IMAGE_FORM)
    choose(form, "Seedream 5.0 lite")
    form.get_by_label("Prompt").fill("A tide pool, in PNG")
    form.get_by_text("3K", exact=True).click()
    form.get_by_label("Output format").select_option("png")
    form.get_by_label("Search the web").check()
    form.get_by_role("button", name="Generate image").click()
    expect(page.locator(".toast")).to_have_text("Image task queued.")
    [task] = fake.tasks_of("demo")
    assert task["params"] == {"size": "3K", "watermark": True, "output_format": "png",
                              "tools": [{"type": "web_search"}]}
    expect(card(page, task["id"]).locator(".task-params")).to_have_text("size 3K · PNG · web search")


def test_a_video_with_audio_as_a_draft_then_rendered_in_full(page: Page, fake_stack: FakeStack, fake: FakeArkflow,
                                                             console: ConsoleWatch) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of 400")
    log_in(page, fake_stack.web_url, *DEMO)
    form = open_video_tab(page)
    choose(form, "Seedance 1.5 pro")
    expect(form.get_by_label("Generate audio")).to_be_checked()  # the model's default
    form.get_by_label("Prompt (optional with a first frame)").fill("A street band plays")
    form.get_by_label(re.compile("^Draft first")).check()
    fake.fail_next("POST", "/api/tasks", 400, "validation_error", "1 invalid field(s)", [
        {"field": "params.generate_audio", "message": "is not supported by this model", "type": "unsupported"}])
    form.get_by_role("button", name="Generate video").click()
    expect(field(form, "params.generate_audio").locator(".field-error")).to_have_text("is not supported by this model")
    form.get_by_role("button", name="Generate video").click()
    expect(page.locator(".toast").last).to_have_text("Video task queued.")
    [draft] = fake.tasks_of("demo")
    assert {key: draft["params"][key] for key in ("generate_audio", "draft", "resolution")} == {
        "generate_audio": True, "draft": True, "resolution": "480p"}

    item = card(page, draft["id"])
    expect(item.locator(".task-params")).to_contain_text("draft")
    expect(item.locator(".task-params")).to_contain_text("with audio")
    expect(item.get_by_role("button", name="Render in full")).to_have_count(0)
    fake.set_status(draft["id"], "running")
    fake.succeed(draft["id"])
    item.get_by_role("button", name="Render in full").click()
    expect(page.locator(".toast").last).to_have_text("Render queued as a new task.")
    rendered = next(task for task in fake.tasks_of("demo") if task["id"] != draft["id"])
    assert rendered["render_of"] == draft["id"] and "draft" not in rendered["params"]
    assert fake.requests_to("POST", rf"/api/tasks/{draft['id']}/render") == 1
    rendered_card = card(page, rendered["id"])
    expect(rendered_card.locator(".task-params")).to_contain_text("rendered from a draft")
    expect(rendered_card.get_by_role("button", name="Render in full")).to_have_count(0)
    screenshot(page, "32-draft-rendered", full_page=False)
