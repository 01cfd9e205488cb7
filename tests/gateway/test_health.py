"""`corral health` and GET /api/health/targets check every configured target without a billed
request (the stand-ins count them): reachable, key accepted, model listed; local models by
registration, never loaded; a required alias with no target up fails (exit 1, 503); `--deep`
sends one tiny request per target that is up, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from tests.conftest import run_cli
from tests.gateway.standin_openai import StandIn
from tests.server.conftest import Server

CONFIG = '''[providers.up]
type = "openai"
base_url = "{up}"
api_key = "${{UP_KEY}}"
[providers.down]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
timeout = {{ connect = 1, first_token = 1, total = 2 }}
[aliases]
fast = ["up/small", "smollm2"]
[aliases.needed]
targets = ["down/big", "up/missing"]
required = true
'''


def test_health_spends_nothing_and_fails_a_required_alias(tmp_path: Path) -> None:
    env = {"UP_KEY": "sk-test"}
    with StandIn("up") as up:
        (tmp_path / "config.toml").write_text(CONFIG.format(up=up.url))
        r = run_cli("health", "--json", env=env)
        assert r.returncode == 1, r.stderr
        report = json.loads(r.stdout)
        targets = {t["target"]: t for t in report["targets"]}
        small = targets["up/small"]
        assert small["up"] and small["authenticated"] and small["model_present"]
        assert not targets["up/missing"]["up"] and "not in the provider's model list" in targets["up/missing"]["error"]
        assert not targets["down/big"]["up"] and "cannot be reached" in targets["down/big"]["error"]
        assert targets["smollm2"]["kind"] == "local" and targets["smollm2"]["loaded"] is False
        assert report["required_down"] == ["needed"] and not report["deep"]
        assert up.billed == 0 and all(r["method"] == "GET" for r in up.requests)
        up.faults.append(("status", 401))  # the next billed request, if any, would see this: none is sent
        table = run_cli("health", env=env)
        assert table.returncode == 1 and "needed" in table.stdout and "NO" in table.stdout
        deep = json.loads(run_cli("health", "--deep", "--json", env=env).stdout)
        assert deep["deep"] and up.billed == 1  # one tiny request to the one remote target that is up
        assert {t["target"]: t["deep"] for t in deep["targets"]}["up/small"] is True

        srv = Server(tmp_path / "srv", config=CONFIG.format(up=up.url), env=env)
        try:
            answer = httpx.get(f"{srv.url}/api/health/targets", timeout=60)
            assert answer.status_code == 503 and answer.json()["required_down"] == ["needed"]
        finally:
            srv.stop()
        assert up.billed == 1
