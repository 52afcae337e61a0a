"""The API reference page (web/reference.html) shows the live OpenAPI document of the real local stack, under the
web app's Content-Security-Policy (a violation is a console error, which fails the test)."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from devstack.testing import LocalStack
from tests.web.conftest import screenshot
from tests.web.ui import log_in

pytestmark = [pytest.mark.browser, pytest.mark.stack]


def test_the_reference_shows_every_route_of_the_live_document(page: Page, local_stack: LocalStack) -> None:
    document = httpx.get(f"{local_stack.api_url}/api/openapi.json").json()
    routes = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}

    page.goto(f"{local_stack.web_url}/reference.html")
    operations = page.locator(".opblock-summary")
    expect(operations).to_have_count(len(routes))
    shown = {(operation.locator(".opblock-summary-method").inner_text().strip(),
              operation.locator(".opblock-summary-path").get_attribute("data-path"))
             for operation in operations.all()}
    assert shown == routes
    create = page.locator(".opblock-summary", has_text="/api/tasks").filter(has_text="POST").first
    create.click()
    expect(page.get_by_text(document["paths"]["/api/tasks"]["post"]["summary"]).first).to_be_visible()
    screenshot(page, "40-api-reference", full_page=False)


def test_the_app_links_to_the_reference(page: Page, local_stack: LocalStack) -> None:
    log_in(page, local_stack.web_url, local_stack.demo.username, local_stack.demo.password)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API").click()
    expect(page).to_have_title("API reference · arkflow")
    expect(page.locator(".opblock-summary-path[data-path='/api/health']")).to_be_visible()
