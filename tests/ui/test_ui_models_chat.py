"""The web UI in a real browser (Debian's chromium through Playwright) against a real `corral serve`:
the shell and its CSP; the Models page (state changes with Load / Unload, pull shows progress and the
model appears); Chat (streams an answer with its figures, Stop ends the generation on the server:
the request log shows the call cancelled, 499); a model answer holding HTML and script renders as
text (no dialog, no request). No console error on any page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.fixtures.tiny_vlm import build_llava
from tests.gateway.standin_openai import StandIn
from tests.hub_server import FakeHub
from tests.server.conftest import Server
from tests.ui.browser import watch

pytestmark = pytest.mark.timeout(300)
EVIL = "<img src=x onerror=alert(1)> and <script>alert(2)</script> done"
MARKDOWN = "Here is **bold** and `code`:\n\n- one\n- two\n\n```python\nprint('hi')\n```\n"


@pytest.fixture(scope="module")
def hub(llama_hub: FakeHub) -> FakeHub:
    return llama_hub


@pytest.fixture(scope="module")
def evil() -> Iterator[StandIn]:
    with StandIn("evil", reply=EVIL) as standin:
        yield standin


@pytest.fixture(scope="module")
def coder() -> Iterator[StandIn]:
    with StandIn("coder", reply=MARKDOWN) as standin:
        yield standin


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, hub: FakeHub, evil: StandIn, coder: StandIn) -> Iterator[Server]:
    config = (f'[providers.evil]\ntype = "openai"\nbase_url = "{evil.url}"\n'
              f'[providers.coder]\ntype = "openai"\nbase_url = "{coder.url}"\n'
              '[aliases]\nodd = "evil/small"\nwriter = "coder/small"\n')
    online = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    llava = build_llava(tmp_path_factory.mktemp("llava") / "llava").path
    server = Server(tmp_path_factory.mktemp("ui"), "--models", "smollm2", "--threads", "2", config=config, env=online,
                    register={"llava": llava})
    yield server
    server.stop()


def open_chat(page: Any, srv: Server, model: str) -> None:
    """The chat page for ``model``, with the conversation kept in the browser cleared."""
    page.goto(f"{srv.url}/ui/#/chat?model={model}")
    page.get_by_role("button", name="New chat").click()


def send(page: Any, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def test_the_shell_is_served_with_a_strict_csp(srv: Server) -> None:
    with srv.client() as c:
        page = c.get("/ui/")
        assert page.status_code == 200 and "<nav" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert c.get("/ui").status_code == 308
        assert c.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
        for bad in ("/ui/../pyproject.toml", "/ui/%2e%2e/api/app.py", "/ui/.hidden", "/ui/nope.js", "/ui/pages/"):
            assert c.get(bad).status_code == 404, bad


def test_models_page_load_unload_and_pull(context: Any, srv: Server) -> None:
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{srv.url}/ui/")
    row = page.locator("tr[data-model='smollm2']")
    assert row.locator(".state").inner_text().startswith("loaded")
    assert [a.inner_text() for a in page.get_by_role("navigation").get_by_role("link").all()] == [
        "Models", "Chat", "Compare", "Playground", "Usage"]
    seen.shot("models")
    row.get_by_role("button", name="Unload smollm2").click()
    expect(row.locator(".state")).to_have_text("not loaded")
    assert httpx.get(f"{srv.url}/api/ps").json()["models"] == []
    row.get_by_role("button", name="Load smollm2").click()
    expect(row.locator(".state")).to_have_text(re.compile("^loaded"))
    page.get_by_label("Pull a model").fill("hf:org/tiny-llama")
    page.get_by_role("button", name="Pull").click()
    page.wait_for_selector("tr[data-model='org/tiny-llama']")
    expect(page.get_by_role("status").first).to_have_text("pulled org/tiny-llama")
    progress = page.locator("progress")
    assert progress.get_attribute("max") != "1" and progress.evaluate("p => p.value === p.max")
    seen.shot("models-pulled")
    assert seen.errors == [] and seen.dialogs == []


def test_chat_streams_and_stop_cancels_on_the_server(context: Any, srv: Server) -> None:
    page = context.new_page()
    seen = watch(page)
    open_chat(page, srv, "smollm2")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Temperature").fill("0")
    send(page, "Name a fruit.")
    answer = page.locator(".message.assistant .metrics")
    answer.wait_for()
    assert "tokens/s" in answer.inner_text() and "in /" in answer.inner_text() and "$" in answer.inner_text()
    assert page.locator(".message.assistant .content").inner_text().strip()
    seen.shot("chat")
    page.get_by_label("Max tokens").fill("2000")
    page.get_by_label("Message").fill("Write a very long story about a dragon.")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".message.assistant .content").nth(1)).not_to_be_empty()
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("status")).to_have_text("stopped")
    rows: list[dict[str, Any]] = []
    for _ in range(100):  # the server notices the closed connection, then logs the call
        rows = httpx.get(f"{srv.url}/api/logs", params={"model": "smollm2", "limit": 1}).json()["rows"]
        if rows and rows[0]["status"] == 499:
            break
        page.wait_for_timeout(100)
    assert rows[0]["status"] == 499 and rows[0]["completion_tokens"] < 2000
    page.reload()  # the conversation is kept in the browser
    expect(page.locator(".message.user")).to_have_count(2)
    assert seen.errors == [] and seen.dialogs == []


def test_html_in_an_answer_is_text(context: Any, srv: Server) -> None:
    page = context.new_page()
    seen = watch(page)
    open_chat(page, srv, "odd")
    send(page, "say something odd")
    page.locator(".message.assistant .metrics").wait_for()
    content = page.locator(".message.assistant .content")
    assert content.inner_text().strip() == EVIL
    assert "served by evil/small" in page.locator(".message.assistant .metrics").inner_text()
    assert content.locator("img").count() == 0 and content.locator("script").count() == 0
    page.wait_for_timeout(300)
    assert seen.dialogs == [] and not [u for u in seen.requests if u.rstrip("/").endswith("/x")]
    assert seen.errors == []


def test_chat_with_an_attached_image(context: Any, srv: Server, tmp_path: Any) -> None:
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(picture)
    page = context.new_page()
    seen = watch(page)
    open_chat(page, srv, "smollm2")
    page.get_by_label("Attach images (image-text models)").set_input_files(str(picture))
    send(page, "What colour is this?")
    expect(page.get_by_role("status")).to_contain_text("does not read images")  # the image reached the server
    open_chat(page, srv, "llava")
    page.get_by_label("Max tokens").fill("4")
    page.get_by_label("Attach images (image-text models)").set_input_files(str(picture))
    send(page, "What colour is this?")
    # llava loads on this first use: on a busy 2-core machine that takes longer than expect's 5 s default
    expect(page.locator(".message.assistant .metrics")).to_contain_text("tokens/s", timeout=60_000)
    assert page.locator(".message.user img.attached").count() == 1
    assert page.get_by_role("status").inner_text() == ""
    rows = httpx.get(f"{srv.url}/api/logs", params={"model": "llava", "limit": 1}).json()["rows"]
    assert rows[0]["status"] == 200 and rows[0]["task"] == "chat"
    seen.shot("chat-image")
    assert [e for e in seen.errors if "400" not in e] == []  # the refused call is the only error logged


def test_tool_calls_are_shown(context: Any, srv: Server) -> None:
    import json

    weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    page = context.new_page()
    seen = watch(page)
    open_chat(page, srv, "smollm2")
    page.get_by_text("Tools", exact=True).click()
    page.get_by_label("Tools (JSON, OpenAI's shape)").fill("[not json")
    send(page, "Weather in Paris?")
    expect(page.get_by_role("status")).to_have_text("the tools are not valid JSON")
    page.get_by_label("Tools (JSON, OpenAI's shape)").fill(json.dumps([weather]))
    page.get_by_label("Require a tool call").check()
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("60")
    page.get_by_role("button", name="Send").click()
    call = page.locator(".message.assistant pre.tool-call")
    expect(call).to_contain_text("tool call: get_weather(", timeout=30_000)  # a constrained answer on a busy CPU
    assert json.loads(call.inner_text().split("get_weather(", 1)[1].rstrip(")"))["city"]
    assert seen.errors == []


def test_markdown_and_copying_code(context: Any, srv: Server) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.url)
    page = context.new_page()
    seen = watch(page)
    open_chat(page, srv, "writer")
    send(page, "show me code")
    content = page.locator(".message.assistant .content")
    expect(content.locator("pre code")).to_have_text("print('hi')")
    assert content.locator("strong").inner_text() == "bold" and content.locator("p code").inner_text() == "code"
    assert content.locator("li").all_inner_texts() == ["one", "two"]
    content.get_by_role("button", name="Copy code").click()
    expect(content.get_by_role("button", name="Copy code")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == "print('hi')"
    assert seen.errors == []
