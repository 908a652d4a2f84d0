"""The demo's /live page in Chromium: history on join, recovery after going offline, tabs.

Served and driven as in tests/test_browser.py (same fixtures and helpers).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .test_browser import STEP_TIMEOUT_MS, DemoServer, browser_available, run_in_browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

__all__ = ["browser_available"]  # the fixture, used by name below


def open_live(context: BrowserContext, url: str, name: str) -> Page:
    """A page of ``context`` on /live, joined to the lobby as ``name``."""
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(url + "live")
    page.fill("#name", name)
    page.click("#join")
    expect(page.locator("#status")).to_have_class(re.compile("status-online"))
    return page


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    return context


def say(page: Page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


async def test_browser_live_page_offline_then_back_sees_every_message_once(
    browser_available: None,
) -> None:
    """A page goes offline while others chat, comes back, and shows each message once."""

    def scenario(browser: Browser, server: DemoServer) -> None:
        from playwright.sync_api import expect

        bob = open_live(new_context(browser), server.url, "bob")
        say(bob, "before ada")
        ada_context = new_context(browser)
        ada = open_live(ada_context, server.url, "ada")
        # History on join: the message said before ada came.
        expect(ada.locator(".message")).to_have_text(["bob: before ada"])

        ada_context.set_offline(True)
        expect(ada.locator("#status")).to_have_class(re.compile("status-offline"))
        expected = ["bob: before ada"]
        for n in range(1, 6):
            say(bob, f"while ada is away {n}")
            expected.append(f"bob: while ada is away {n}")
        expect(bob.locator(".message")).to_have_text(expected)

        ada_context.set_offline(False)
        expect(ada.locator("#status")).to_have_class(re.compile("status-online"))
        expect(ada.locator("#notice")).to_have_text("recovered 5 messages")
        say(bob, "welcome back")
        expected.append("bob: welcome back")
        expect(ada.locator(".message")).to_have_text(expected)
        offsets = [
            int(o)
            for o in ada.locator(".message").evaluate_all(
                "items => items.map(item => item.dataset.offset)"
            )
        ]
        assert offsets == list(range(1, len(expected) + 1))

    await run_in_browser(scenario)


async def test_browser_live_two_tabs_are_one_user(browser_available: None) -> None:
    """One name in two tabs is listed once, with its two tabs."""

    def scenario(browser: Browser, server: DemoServer) -> None:
        from playwright.sync_api import expect

        context = new_context(browser)
        first = open_live(context, server.url, "ada")
        open_live(context, server.url, "ada")
        bob = open_live(new_context(browser), server.url, "bob")
        for page in (first, bob):
            expect(page.locator("#user-count")).to_have_text("2")
            expect(page.locator("#users li[data-user='ada']")).to_have_text("ada (2 tabs)")
            expect(page.locator("#users li[data-user='bob']")).to_have_text("bob")

    await run_in_browser(scenario)
