"""The chat demo in a real browser: Chromium driven by Playwright.

The demo app is served by Trio in the test's own nursery (127.0.0.1, port 0).
Playwright's async API runs on asyncio, so the browser is driven with its synchronous
API from a worker thread (``trio.to_thread.run_sync``); the thread asks the Trio side to
restart the server with ``trio.from_thread.run``.

Without Playwright or Chromium (``/usr/bin/chromium``, or ``$RUE_TRIO_CHROMIUM``) these
tests are skipped, unless ``RUE_TRIO_REQUIRE_BROWSER`` or ``CI`` is set (``.ci/run`` sets
both): then they fail. A screenshot of the chat is saved as ``test-artifacts/chat.png``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from rue_trio._demo import make_app

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("RUE_TRIO_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Playwright's own bound on each action and expectation, in milliseconds.
STEP_TIMEOUT_MS = 15_000
# The bound on a whole scenario (trio.fail_after in run_in_browser), and pytest-timeout's
# per-test bound a little above it, so the Trio bound fires first with the better message.
SCENARIO_TIMEOUT = 120
BROWSER_TIMEOUT = SCENARIO_TIMEOUT + 30


@pytest.fixture
def browser_available() -> None:
    """Skip without a browser, or fail when RUE_TRIO_REQUIRE_BROWSER or CI is set."""
    missing = None
    if importlib.util.find_spec("playwright") is None:
        missing = "playwright is not installed (pip install playwright)"
    elif not CHROMIUM.is_file():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing is None:
        return
    if os.environ.get("RUE_TRIO_REQUIRE_BROWSER") or os.environ.get("CI"):
        pytest.fail(f"RUE_TRIO_REQUIRE_BROWSER or CI is set but {missing}")
    pytest.skip(missing)


class DemoServer:
    """The demo app served in a nursery, restartable on the same port."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._scope, self._stopped, self.port = await self._nursery.start(self._serve, self.port)

    async def restart(self) -> None:
        """Stop the server (WebSockets get 1001), then serve a fresh app on the same port."""
        self._scope.cancel()
        await self._stopped.wait()
        await self.start()

    async def _serve(
        self,
        port: int,
        *,
        task_status: trio.TaskStatus[tuple[trio.CancelScope, trio.Event, int]],
    ) -> None:
        stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    addresses = await nursery.start(make_app().serve, "127.0.0.1", port)
                    task_status.started((scope, stopped, addresses[0][1]))
        finally:
            stopped.set()


async def run_in_browser(scenario: Callable[[Browser, DemoServer], None]) -> None:
    """Serve the demo and run ``scenario(browser, server)`` in a worker thread."""

    def drive(server: DemoServer) -> None:
        from playwright.sync_api import expect, sync_playwright

        expect.set_options(timeout=STEP_TIMEOUT_MS)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                scenario(browser, server)
            finally:
                browser.close()

    with trio.fail_after(SCENARIO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = DemoServer(nursery)
            await server.start()
            # Abandoned on cancel: a wedged browser fails the test at fail_after instead
            # of hanging the run (Playwright's own step timeouts end the thread later).
            await trio.to_thread.run_sync(drive, server, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()


def open_chat(browser: Browser, url: str, name: str, room: str) -> Page:
    """A new browser (own storage) on the page, joined to ``room`` as ``name``."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1000, "height": 640})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    page.fill("#name", name)
    page.fill("#room", room)
    page.click("#join")
    expect(page.locator("#status")).to_have_class(re.compile("status-online"))
    return page


# Records, from now on, that the page left the online state (a MutationObserver sees every
# change of the status's class, however briefly the page stays offline).
WATCH_OFFLINE = """() => {
    window.wentOffline = false;
    const status = document.querySelector("#status");
    new MutationObserver((records) => {
        if (records.some((r) => (r.oldValue || "").includes("status-online"))) {
            window.wentOffline = true;
        }
    }).observe(status, { attributes: true, attributeFilter: ["class"], attributeOldValue: true });
}"""
BACK_ONLINE = """() => window.wentOffline
    && document.querySelector("#status").classList.contains("status-online")"""


def say(page: Page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def expect_members(page: Page, *names: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#member-count")).to_have_text(str(len(names)))
    expect(page.locator("#members li")).to_have_text(list(names))


@pytest.mark.timeout(BROWSER_TIMEOUT)
async def test_browser_room_members_chat_and_see_each_other(browser_available: None) -> None:
    """Two pages in a room see each other's messages and the count; another room sees none."""

    def scenario(browser: Browser, server: DemoServer) -> None:
        from playwright.sync_api import expect

        ada = open_chat(browser, server.url, "ada", "lobby")
        expect_members(ada, "ada")
        bob = open_chat(browser, server.url, "bob", "lobby")
        eve = open_chat(browser, server.url, "eve", "trio")
        expect_members(ada, "ada", "bob")
        expect_members(bob, "ada", "bob")
        expect_members(eve, "eve")
        expect(ada.locator(".notice").last).to_have_text("bob joined the room")

        say(ada, "Hello from ada!")
        say(bob, "Hi ada, bob here.")
        say(eve, "Anyone in trio?")
        for page in (ada, bob):
            expect(page.locator(".message")).to_have_text(
                ["adaHello from ada!", "bobHi ada, bob here."]
            )
        expect(ada.locator(".message.mine")).to_have_text(["adaHello from ada!"])
        expect(eve.locator(".message")).to_have_text(["eveAnyone in trio?"])
        expect(page.locator("#rtt")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"))

        ARTIFACTS.mkdir(exist_ok=True)
        ada.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

        bob.context.close()
        expect_members(ada, "ada")
        expect(ada.locator(".notice").last).to_have_text("bob left the room")
        expect_members(eve, "eve")
        expect(eve.locator(".notice")).to_have_text(["eve joined the room"])

    await run_in_browser(scenario)
    assert (ARTIFACTS / "chat.png").stat().st_size > 0


@pytest.mark.timeout(BROWSER_TIMEOUT)
async def test_browser_page_reconnects_after_server_restart(browser_available: None) -> None:
    """A server restart drops the WebSockets; the pages come back on their own."""

    def scenario(browser: Browser, server: DemoServer) -> None:
        from playwright.sync_api import expect

        ada = open_chat(browser, server.url, "ada", "lobby")
        bob = open_chat(browser, server.url, "bob", "lobby")
        expect_members(ada, "ada", "bob")
        for page in (ada, bob):
            page.evaluate(WATCH_OFFLINE)
        trio.from_thread.run(server.restart)
        for page in (ada, bob):
            # Offline since the restart, then online again: before that, the page still
            # shows the old connection's state, or the empty list of the offline one.
            page.wait_for_function(BACK_ONLINE)
            # Who reconnects first, and so heads the list, is up to the backoff's jitter.
            expect(page.locator("#member-count")).to_have_text("2")
            assert sorted(page.locator("#members li").all_inner_texts()) == ["ada", "bob"]
        say(bob, "still here")
        expect(ada.locator(".message")).to_have_text(["bobstill here"])

    await run_in_browser(scenario)
