"""One ledger for local and remote calls: each answer says who served it, after how many attempts
and what it cost (x-corral-* headers), priced from the provider's config, the preset's table, or
the local machine's time (local_cost_per_hour), never invented (an unlisted model is "unknown",
$0); `corral usage` and GET /api/usage sum the same rows, and the sums equal the headers'."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli
from tests.gateway.standin_openai import StandIn
from tests.server.conftest import Server

from corral.config import load_settings
from corral.runtime.ledger import price
from corral.tasks import Usage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONFIG = '''local_cost_per_hour = 36.0
[providers.up]
type = "openai"
base_url = "{url}"
retries = {{ max = 0, backoff = 0 }}
prices = {{ "small" = {{ input = 1.0, output = 2.0 }} }}
[providers.groq]
type = "groq"
base_url = "{url}"
retries = {{ max = 0, backoff = 0 }}
[aliases]
fast = ["up/small", "smollm2"]
'''


def test_prices_come_from_config_table_time_or_nowhere(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(CONFIG.format(url="http://127.0.0.1:9/v1"))
    settings = load_settings()
    used = Usage(1000, 500)
    assert price(settings, "up/small", used, 9.0).source == "config"
    assert price(settings, "up/small", used, 9.0).usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    table = price(settings, "groq/llama-3.1-8b-instant", used, 9.0)
    assert table.source == "table" and table.usd == pytest.approx((1000 * 0.05 + 500 * 0.08) / 1e6)
    assert price(settings, "groq/some-new-model", used, 9.0) == type(table)(0.0, "unknown")
    local = price(settings, "smollm2", used, 9.0)
    assert local.source == "local_time" and local.usd == pytest.approx(9.0 * 36.0 / 3600)


def test_headers_the_ledger_and_usage_agree(tmp_path: Path) -> None:
    with StandIn("up", reply="one two three four five six") as up:
        srv = Server(tmp_path / "srv", "--threads", "2", config=CONFIG.format(url=up.url))
        try:
            ask = {"messages": [{"role": "user", "content": "Say one word."}], "max_tokens": 4, "temperature": 0}
            remote = httpx.post(f"{srv.url}/v1/chat/completions", json={"model": "up/small", **ask}, timeout=120)
            assert remote.status_code == 200
            assert remote.headers["x-corral-target"] == "up/small" and remote.headers["x-corral-attempts"] == "1"
            assert float(remote.headers["x-corral-cost-usd"]) == pytest.approx((5 * 1.0 + 4 * 2.0) / 1e6)
            assert float(remote.headers["x-corral-overhead-ms"]) >= 0 and "x-corral-load-ms" not in remote.headers
            up.faults.append(("status", 500))  # up/small fails: the local model answers, priced by its time
            local = httpx.post(f"{srv.url}/v1/chat/completions", json={"model": "fast", **ask}, timeout=120)
            assert local.status_code == 200 and local.headers["x-corral-target"] == "smollm2"
            assert local.headers["x-corral-attempts"] == "2" and float(local.headers["x-corral-cost-usd"]) > 0
            assert float(local.headers["x-corral-load-ms"]) > 0  # this call loaded smollm2
            again = httpx.post(f"{srv.url}/v1/chat/completions", json={"model": "smollm2", **ask}, timeout=120)
            assert "x-corral-load-ms" not in again.headers and again.headers["x-corral-target"] == "smollm2"
            with httpx.stream("POST", f"{srv.url}/v1/chat/completions",
                              json={"model": "fast", "stream": True, **ask}, timeout=120) as streamed:
                assert streamed.headers["x-corral-target"] == "up/small"  # known once the first token is
                assert "x-corral-cost-usd" not in streamed.headers  # priced when it ends: in the ledger
                streamed.read()
            served = httpx.get(f"{srv.url}/api/usage", timeout=30).json()
            metrics = httpx.get(f"{srv.url}/metrics", timeout=30).text
        finally:
            srv.stop()
    assert 'corral_target_fallbacks_total{alias="fast",target="up/small"} 1.0' in metrics
    assert 'corral_cost_usd_total{source="config",target="up/small"} 2.6e-05' in metrics  # two answers of 1.3e-05
    rows = {(r["name"], r["target"]): r for r in served["rows"]}
    assert rows[("up/small", "up/small")]["price_sources"] == "config"
    assert rows[("fast", "smollm2")]["price_sources"] == "local_time"
    assert rows[("fast", "up/small")]["requests"] == 2  # the failed attempt and the streamed answer
    headers = float(remote.headers["x-corral-cost-usd"]) + float(local.headers["x-corral-cost-usd"])
    streamed_cost = (5 * 1.0 + 4 * 2.0) / 1e6
    again_cost = float(again.headers["x-corral-cost-usd"])
    assert served["total_cost_usd"] == pytest.approx(headers + streamed_cost + again_cost, rel=1e-6)
    cli = json.loads(run_cli("usage", "--json", env={"CORRAL_HOME": str(tmp_path / "srv")}).stdout)
    assert cli["rows"] == served["rows"] and cli["total_cost_usd"] == pytest.approx(served["total_cost_usd"])
    shown = run_cli("usage", "--since", "1d", env={"CORRAL_HOME": str(tmp_path / "srv")}).stdout
    assert "local_time" in shown and "up/small" in shown and "total: $" in shown
    assert run_cli("usage", "--since", "yesterday").returncode == 2
