"""The Compare and Usage pages in a real browser against a real `corral serve` with a local model and
two remote (stand-in) ones: three panels stream and then show a figure in every cell (load time and
memory only for the local model); blind mode hides the names until a vote, the vote reaches the
server's win table; per-panel settings reach each model; the Usage page lists the calls just made,
their cost, and the targets' health. The votes API on its own too."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.gateway.standin_openai import StandIn
from tests.server.conftest import Server
from tests.ui.browser import watch

pytestmark = pytest.mark.timeout(300)
NUMBER = re.compile(r"\d")


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[StandIn, StandIn]]:
    with StandIn("a", reply="apple is a fruit") as a, StandIn("b", reply="banana is yellow and long") as b:
        yield a, b


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, ups: tuple[StandIn, StandIn]) -> Iterator[Server]:
    config = "".join(f'[providers.{u.name}]\ntype = "openai"\nbase_url = "{u.url}"\n'
                     'prices = { "small" = { input = 1.0, output = 2.0 } }\n' for u in ups)
    server = Server(tmp_path_factory.mktemp("ui-compare"), "--models", "smollm2", "--threads", "2",
                    config=config + '[aliases]\nboth = ["a/small", "b/small"]\n')
    yield server
    server.stop()


def figures(panel: Any) -> dict[str, str]:
    terms = panel.locator("dt").all_inner_texts()
    return dict(zip(terms, panel.locator("dd").all_inner_texts(), strict=True))


def test_three_models_side_by_side(context: Any, srv: Server) -> None:
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{srv.url}/ui/#/compare?models=smollm2,a/small,b/small")
    page.get_by_label("Prompt").fill("Name a fruit.")
    page.get_by_label("Max tokens", exact=True).fill("8")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("status")).to_have_text("done", timeout=120_000)
    panels = page.locator("section.panel")
    expect(panels).to_have_count(3)
    for i, name in enumerate(("smollm2", "a/small", "b/small")):
        panel = panels.nth(i)
        assert panel.locator("h2").inner_text() == name
        cells = figures(panel)
        assert list(cells) == ["Time to first token", "Tokens/s", "Total time", "Tokens in / out", "Cost", "Load time",
                               "Memory"]
        local = name == "smollm2"
        for label, value in cells.items():
            if label in ("Load time", "Memory") and not local:
                assert value == "-", (name, label)
            elif label == "Load time" and local:
                assert value == "already loaded" or NUMBER.search(value), value  # preloaded by --models
            else:
                assert NUMBER.search(value), (name, label, value)
        assert panel.locator(".content").inner_text().strip()
    assert panels.nth(1).locator(".content").inner_text() == "apple is a fruit"
    panels.nth(1).get_by_text("View code").click()
    assert "a/small" in panels.nth(1).locator("pre").first.inner_text()
    seen.shot("compare")
    assert seen.errors == []


def test_blind_vote_reaches_the_win_table(context: Any, srv: Server) -> None:
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{srv.url}/ui/#/compare?models=a/small,b/small")
    page.get_by_label("Prompt").fill("Which fruit?")
    page.get_by_label("Blind (hide names until a vote)").check()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("status")).to_have_text("vote for the best answer")
    titles = page.locator("section.panel h2").all_inner_texts()
    assert titles == ["Model A", "Model B"] and "a/small" not in page.locator("section.panel").first.inner_text()
    page.locator("section.panel").nth(1).get_by_role("button", name="Vote for this answer").click()
    expect(page.get_by_role("status")).to_have_text("voted for b/small")
    assert page.locator("section.panel h2").all_inner_texts() == ["a/small", "b/small"]
    table = page.locator("table").last
    expect(table).to_contain_text("b/small")
    rows = {r["model"]: r for r in httpx.get(f"{srv.url}/api/votes").json()["table"]}
    assert (rows["b/small"]["wins"], rows["a/small"]["losses"]) == (1, 1)
    assert seen.errors == []


def test_votes_api_and_per_panel_settings(srv: Server) -> None:
    with srv.client() as c:
        assert c.post("/api/votes", json={"models": ["a/small", "b/small"], "winner": "tie"}).status_code == 200
        assert c.post("/api/votes", json={"models": ["a/small", "b/small"], "winner": "c"}).status_code == 422
        assert c.post("/api/votes", json={"models": ["a/small"], "winner": "a/small"}).status_code == 422
        ties = {r["model"]: r["ties"] for r in c.get("/api/votes").json()["table"]}
        assert ties["a/small"] >= 1 and ties["b/small"] >= 1
        body = {"models": ["a/small", "b/small"], "messages": [{"role": "user", "content": "x"}],
                "panels": [{"max_tokens": 2}, {"max_tokens": 4}]}
        lines = c.post("/api/compare", json=body).text.splitlines()
        results = [json.loads(line)["result"] for line in lines if '"result"' in line]
        assert [r["tokens_out"] for r in results] == [2, 4]
        body["panels"] = [{"max_tokens": 2}]
        assert c.post("/api/compare", json=body).status_code == 422


def test_usage_page_lists_the_calls(context: Any, srv: Server) -> None:
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{srv.url}/ui/#/usage")
    log = page.locator("table.log tbody tr")
    expect(log.first).to_be_visible()
    texts = log.all_inner_texts()
    assert any("a/small" in t and "admin" in t for t in texts)  # the compare calls made above
    expect(page.locator("table.usage tbody tr").first).to_be_visible()
    assert "$" in page.locator("table.usage").inner_text()
    expect(page.locator("ul.targets")).to_contain_text("a/small (remote): up")
    page.get_by_label("Status").select_option("error")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.log tbody tr")).to_have_count(0)
    seen.shot("usage")
    assert seen.errors == []
