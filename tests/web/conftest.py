"""Headless Chromium (Debian's package, driven by Playwright) against the fake API or the real local stack."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from tests.web.fake_api import FakeArkflow, FakeStack, run_fake_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
# Two shared cores and other suites running at once: allow for a slow moment before calling a wait failed.
expect.set_options(timeout=10_000)
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def fake_stack() -> Iterator[FakeStack]:
    with run_fake_stack() as stack:
        yield stack


@pytest.fixture
def fake(fake_stack: FakeStack) -> FakeArkflow:
    """The fake API, fresh for each test (default users and models, no tasks)."""
    fake_stack.fake.reset()
    return fake_stack.fake


@dataclass
class ConsoleWatch:
    """Console errors and uncaught exceptions of a page; a test lists the ones it provokes on purpose."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [error for error in self.errors if not any(pattern.search(error) for pattern in self.allowed)]


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


def _watch(page: Page, console: ConsoleWatch) -> None:
    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console.errors.append(f"{message.text} @ {message.location.get('url', '')}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: console.errors.append(f"uncaught: {error}"))


@pytest.fixture
def page(browser: Browser, console: ConsoleWatch) -> Iterator[Page]:
    """A fresh desktop-sized page (own storage); fails the test on console errors it did not allow."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    _watch(page, console)
    yield page
    context.close()
    assert console.unexpected() == [], "console errors"


@pytest.fixture
def new_page(browser: Browser, console: ConsoleWatch) -> Iterator:
    """Open more pages (a phone, a second user) with the same console check."""
    contexts = []

    def open_page(viewport: dict[str, int] = DESKTOP) -> Page:
        context = browser.new_context(viewport=viewport, is_mobile=viewport == PHONE, has_touch=viewport == PHONE)
        context.set_default_timeout(10_000)
        contexts.append(context)
        opened = context.new_page()
        _watch(opened, console)
        return opened

    yield open_page
    for context in contexts:
        context.close()
    assert console.unexpected() == [], "console errors"


def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if full_page:  # a sticky header would otherwise be drawn where the page happens to be scrolled
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)
    return path
