"""Reaching the web UI: with API keys on, the page itself loads without one and asks for the key (kept
in session storage) before it shows anything; the API stays closed without it. At phone width every
page fits the screen; the navigation and the chat form are reachable with the keyboard alone."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect
from tests.server.conftest import Server
from tests.ui.browser import browser, watch

pytestmark = pytest.mark.timeout(300)
KEY = "sk-ui-test-0123"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("ui-key"), "--models", "smollm2", "--threads", "2", "--api-key", KEY)
    yield server
    server.stop()


def test_the_page_asks_for_the_key(srv: Server) -> None:
    assert httpx.get(f"{srv.url}/ui/").status_code == 200  # the page is open; its data is not
    assert httpx.get(f"{srv.url}/api/models").status_code == 401
    with browser() as ctx:
        page = ctx.new_page()
        seen = watch(page)
        page.goto(f"{srv.url}/ui/")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        page.get_by_label("API key").fill("wrong")
        page.get_by_role("button", name="Use key").click()
        expect(dialog).to_be_visible()  # refused: asked again
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("tr[data-model='smollm2']")).to_be_visible()
        assert page.evaluate("() => sessionStorage.getItem('corral-api-key')") == KEY
        page.reload()  # kept for the session: not asked again
        expect(page.locator("tr[data-model='smollm2']")).to_be_visible()
        expect(dialog).to_be_hidden()
        # the browser logs each refused call (401) as a console error; nothing else may appear
        assert [e for e in seen.errors if "401" not in e] == []


def test_phone_width_and_keyboard(srv: Server) -> None:
    with browser(width=390, height=844) as ctx:
        page = ctx.new_page()
        seen = watch(page)
        page.goto(f"{srv.url}/ui/")
        page.evaluate(f"() => sessionStorage.setItem('corral-api-key', '{KEY}')")
        for name in ("models", "chat", "compare", "playground", "usage"):
            page.goto(f"{srv.url}/ui/#/{name}")
            page.reload()
            expect(page.locator("main h1")).to_be_visible()
            root = "document.documentElement"
            overflow = page.evaluate(f"() => {root}.scrollWidth - {root}.clientWidth")
            assert overflow <= 0, (name, overflow)
            seen.shot(f"phone-{name}")
        page.goto(f"{srv.url}/ui/#/chat")
        expect(page.get_by_label("Message")).to_be_visible()
        reached: list[str] = []
        for _ in range(25):
            page.keyboard.press("Tab")
            reached.append(page.evaluate("() => document.activeElement.getAttribute('aria-label') || "
                                         "document.activeElement.id || document.activeElement.textContent.trim()"))
        assert {"Models", "Chat", "Compare", "Playground", "Usage"} <= set(reached)
        assert "chat-input" in reached and "Send" in reached
        assert [e for e in seen.errors if "401" not in e] == []  # the first load, before the key was stored
