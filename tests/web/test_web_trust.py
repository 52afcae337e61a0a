"""What a tab open all day, a hostile result URL and a logout mid-reconnect must not break, in headless Chromium
against the fake API (tests/web/fake_api.py)."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.clocks import FrozenClock
from tests.polling import wait_for
from tests.web.conftest import ConsoleWatch
from tests.web.fake_api import ADMIN, DEMO, FakeArkflow, FakeStack
from tests.web.ui import card, log_in

pytestmark = pytest.mark.browser

LINK_TTL_S = 3600  # as the API presigns result links

# Marks an element, so a test can tell whether what the user looks at was rebuilt.
MARK = "(element) => { element.dataset.probe = 'kept'; }"
# Records every WebSocket the page opens, and for every ticket answer it reads, a promise that settles once the
# code awaiting that answer has run on (a task queued after the read resolves runs after its continuations).
WATCH_SOCKETS_AND_TICKETS = """
window.__sockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) { super(url, protocols); window.__sockets.push(String(url)); }
};
window.__ticketsRead = [];
const nativeText = Response.prototype.text;
Response.prototype.text = function () {
  const ticket = this.url.includes("/api/ws/ticket");
  return nativeText.call(this).then((text) => {
    if (ticket) window.__ticketsRead.push(new Promise((resolve) => setTimeout(resolve, 0)));
    return text;
  });
};
"""


def log_in_again(page: Page, username: str, password: str) -> None:
    """Log in on the login screen a logout left, in the same page (no reload: what was in flight goes on)."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".whoami")).to_contain_text(username)
    expect(page.locator(".live-status")).to_have_attribute("data-live", "live")


def succeeded_image(fake: FakeArkflow, owner: str = "demo", **fields: object) -> str:
    task = fake.add_task(owner, prompt="a lighthouse", params={"max_images": 2})
    fake.set_status(task["id"], "running", broadcast=False)
    if fields:
        fake.set_status(task["id"], "succeeded", **fields)
    else:
        fake.succeed(task["id"])
    return task["id"]


def test_result_links_are_refreshed_before_they_expire_without_rebuilding_an_open_viewer(
    page: Page, fake_stack: FakeStack, fake: FakeArkflow
) -> None:
    # The page's clock and the one the fake signs and checks links by move together, by hand: however slowly the
    # machine runs, the links are an hour old exactly when the test says so.
    clock = FrozenClock(start=float(int(time.time())))
    fake.link_clock, fake.link_ttl_s = clock.now, LINK_TTL_S  # an expired link answers 403: a console error
    page.clock.install(time=clock.now())
    task_id = succeeded_image(fake)
    log_in(page, fake_stack.web_url, *DEMO)
    # Settled: the socket is up and the listing its connect asks for has come back (each listing signs anew).
    wait_for(lambda: fake.connected_sockets() == 1)
    page.wait_for_load_state("networkidle")
    item = card(page, task_id)
    thumbnail = item.locator(".gallery img").first
    expect(thumbnail).to_have_attribute("src", re.compile(rf"X-Amz-Expires={LINK_TTL_S}"))
    thumbnail_src = thumbnail.get_attribute("src")
    item.get_by_role("button", name="View image 1 of 2 full size").click()
    viewer = page.get_by_role("dialog")
    image, download = viewer.locator(".viewer-image"), viewer.get_by_role("link", name="Download")
    expect(image).to_have_attribute("src", thumbnail_src)
    for element in (image, download, thumbnail, item):
        element.evaluate(MARK)

    # To a second before the refresh is due (five minutes before expiry), then past it: the old links still good.
    clock.advance(LINK_TTL_S - 301)
    page.clock.pause_at(clock.now())
    clock.advance(2)
    page.clock.run_for(2000)

    expect(image).not_to_have_attribute("src", thumbnail_src)
    page.clock.resume()  # from here the page's time runs on, well inside the fresh links' hour

    fresh = image.get_attribute("src")
    assert urlsplit(fresh).path == urlsplit(thumbnail_src).path  # the same picture, a new link
    expect(download).to_have_attribute("href", fresh)
    expect(thumbnail).not_to_have_attribute("src", thumbnail_src)
    for element in (image, download, thumbnail, item):
        expect(element).to_have_attribute("data-probe", "kept")  # swapped in place, nothing rebuilt
    expect(viewer.get_by_role("heading")).to_have_text("Image 1 of 2")
    page.wait_for_function("() => { const i = document.querySelector('.viewer-image'); "
                           "return i.complete && i.naturalWidth > 0; }")


def test_a_reconnect_brings_fresh_links_into_the_cards_shown(page: Page, fake_stack: FakeStack,
                                                              fake: FakeArkflow) -> None:
    fake.link_ttl_s = LINK_TTL_S
    task_id = succeeded_image(fake)
    log_in(page, fake_stack.web_url, *DEMO)
    thumbnail = card(page, task_id).locator(".gallery img").first
    expect(thumbnail).to_have_attribute("src", re.compile(r"X-Amz-Signature="))
    before = thumbnail.get_attribute("src")
    thumbnail.evaluate(MARK)
    wait_for(lambda: fake.connected_sockets() == 1)

    fake.drop_sockets()

    expect(thumbnail).not_to_have_attribute("src", before, timeout=15_000)
    expect(thumbnail).to_have_attribute("data-probe", "kept")
    expect(page.locator(".live-status")).to_have_text("Live")


def test_a_javascript_result_url_never_reaches_an_image_or_a_link(page: Page, fake_stack: FakeStack,
                                                                   fake: FakeArkflow) -> None:
    task_id = succeeded_image(fake, result_urls=["javascript:alert(document.domain)",
                                                 f"{fake.api_url}/media/safe-2.png"])
    log_in(page, fake_stack.web_url, *DEMO)
    item = card(page, task_id)
    expect(item.locator(".gallery img")).to_have_count(2)

    item.get_by_role("button", name="View image 1 of 2 full size").click()

    viewer = page.get_by_role("dialog")
    expect(viewer.get_by_role("heading")).to_have_text("Image 1 of 2")
    assert viewer.locator(".viewer-image").get_attribute("src") is None
    assert viewer.locator("a.button").get_attribute("href") is None
    page.keyboard.press("ArrowRight")
    expect(viewer.get_by_role("link", name="Download")).to_have_attribute("href", re.compile(r"/media/safe-2\.png$"))
    assert page.locator("[href^='javascript:' i], [src^='javascript:' i]").count() == 0


def test_a_logout_and_login_during_a_reconnect_leave_no_socket_of_the_previous_user(
    page: Page, fake_stack: FakeStack, fake: FakeArkflow, console: ConsoleWatch
) -> None:
    page.add_init_script(WATCH_SOCKETS_AND_TICKETS)
    log_in(page, fake_stack.web_url, *DEMO)
    wait_for(lambda: fake.connected_sockets() == 1)
    held = fake.hold_next("POST", r"/api/ws/ticket")  # the reconnect's ticket (demo's) arrives late

    fake.drop_sockets()
    wait_for(lambda: held.arrived == 1)
    page.get_by_role("button", name="Log out").click()
    log_in_again(page, *ADMIN)
    held.release.set()

    page.wait_for_function("() => window.__ticketsRead.length >= 3")  # demo's first, admin's, then demo's late one
    page.evaluate("() => Promise.all(window.__ticketsRead)")
    demo_tickets = {ticket for ticket, owner in fake.state.tickets.items() if owner == "demo"}
    opened = page.evaluate("() => window.__sockets")
    assert [url for url in opened if any(ticket in url for ticket in demo_tickets)] == []
    with fake.lock:
        assert sorted(fake.sockets.values()) == ["admin"]
    expect(page.locator(".whoami")).to_contain_text("admin")


def test_a_late_401_from_the_previous_session_does_not_end_the_new_one(
    page: Page, fake_stack: FakeStack, fake: FakeArkflow, console: ConsoleWatch
) -> None:
    console.allow(r"status of 401")
    page.add_init_script(WATCH_SOCKETS_AND_TICKETS)
    log_in(page, fake_stack.web_url, *DEMO)
    wait_for(lambda: fake.connected_sockets() == 1)
    # The reconnect's ticket request was sent with demo's token, and answers 401 once demo has logged out.
    fake.fail_next("POST", r"/api/ws/ticket", 401, "invalid_token", "The session has ended; log in again.")
    held = fake.hold_next("POST", r"/api/ws/ticket")

    fake.drop_sockets()
    wait_for(lambda: held.arrived == 1)
    page.get_by_role("button", name="Log out").click()
    log_in_again(page, *ADMIN)
    held.release.set()

    page.wait_for_function("() => window.__ticketsRead.length >= 3")
    page.evaluate("() => Promise.all(window.__ticketsRead)")
    expect(page.get_by_role("heading", name="Log in to arkflow")).to_have_count(0)
    expect(page.locator(".whoami")).to_contain_text("admin")
    assert page.evaluate("() => JSON.parse(localStorage.getItem('arkflow.session')).role") == "admin"


def test_the_web_app_ships_a_content_security_policy_that_allows_only_its_own_script_and_origins(
    page: Page, fake_stack: FakeStack, fake: FakeArkflow, console: ConsoleWatch
) -> None:
    console.allow(r"Content Security Policy")
    response = page.goto(fake_stack.web_url)
    assert response is not None
    policy = dict(directive.strip().split(" ", 1) for directive in
                  response.headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'"
    api_origin, ws_origin = fake.api_url, fake.ws_url
    assert policy["connect-src"].split() == ["'self'", api_origin, ws_origin]
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"

    log_in(page, fake_stack.web_url, *DEMO)  # the app itself runs under it: no violation reaches the console

    ran_inline = page.evaluate("""() => {
        const script = document.createElement('script');
        script.textContent = 'window.__inline = true';
        document.body.append(script);
        return window.__inline === true;
    }""")
    assert ran_inline is False
    elsewhere = page.evaluate("() => fetch('http://127.0.0.1:9/steal').then(() => 'sent', () => 'blocked')")
    assert elsewhere == "blocked"


def test_an_update_cut_down_to_fit_one_message_makes_the_page_read_the_task(page: Page, fake_stack: FakeStack,
                                                                             fake: FakeArkflow) -> None:
    task = fake.add_task("demo", prompt="a long story")
    log_in(page, fake_stack.web_url, *DEMO)
    expect(card(page, task["id"]).locator(".status-pill")).to_have_text("Queued")
    wait_for(lambda: fake.connected_sockets() == 1)
    finished = fake.set_status(task["id"], "failed", broadcast=False,
                               error={"code": "boom", "message": "what went wrong, at length"})

    fake.broadcast("demo", {"type": "task_update", "data": {
        "id": task["id"], "status": "failed", "version": finished["version"], "updated_at": finished["updated_at"],
        "truncated": True}})

    item = card(page, task["id"])
    expect(item.locator(".status-pill")).to_have_text("Failed")
    expect(item.locator(".task-error")).to_contain_text("what went wrong, at length")
