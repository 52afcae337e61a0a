"""What the browser tests do on the web app's screens, written once."""

from __future__ import annotations

import io
import random

from PIL import Image
from playwright.sync_api import Locator, Page, expect

IMAGE_FORM = "form[aria-label='New image task']"
VIDEO_FORM = "form[aria-label='New video task']"


def log_in(page: Page, web_url: str, username: str, password: str) -> None:
    page.goto(web_url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".whoami")).to_contain_text(username)
    expect(page.locator(".live-status")).to_have_attribute("data-live", "live")


def png(width: int, height: int, noisy: bool = False) -> bytes:
    """A PNG of the given size; noisy ones do not compress, to get past the inline-upload size."""
    image = Image.new("RGB", (width, height), (200, 90, 60))
    if noisy:
        image = Image.frombytes("RGB", (width, height), random.Random(7).randbytes(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def file_payload(name: str, data: bytes, mime: str = "image/png") -> dict[str, object]:
    return {"name": name, "mimeType": mime, "buffer": data}


def field(form: Locator, name: str) -> Locator:
    """A field wrapper by its API field path (where its error shows)."""
    return form.locator(f"[data-field='{name}']")


def card(page: Page, task_id: str) -> Locator:
    return page.locator(f".task-card[data-task-id='{task_id}']")


def open_video_tab(page: Page) -> Locator:
    page.get_by_role("tab", name="Video").click()
    return page.locator(VIDEO_FORM)


def values_table(figure: Locator) -> list[list[str]]:
    """The chart's values as the page lists them under the canvas ("Values"): the very arrays handed to uPlot."""
    details = figure.locator("details.chart-details")
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    expect(figure.locator("table.chart-values thead")).to_have_count(1)  # the table is built on opening
    return figure.locator("table.chart-values tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))")
