"""The catalogue's row 11 (issue 18): a unique fake provider key, set in the environment and named
by the config, reaches the provider and nothing else: not a response or error of any door (OpenAI,
Ollama, Anthropic, Responses), not a metric, a listing, the web UI's files, `config show`, the
request log, the server's log or any file the server wrote. A key written in clear in the config is
refused without being echoed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli
from tests.gateway.standin_openai import StandIn
from tests.gateway.test_gateway_http import provider
from tests.server.conftest import Server

pytestmark = pytest.mark.timeout(180)
KEY = "sk-PLANTED-SECRET-5e1d0c"
CHAT = [{"role": "user", "content": "count"}]


def test_the_key_reaches_the_provider_and_nothing_else(tmp_path: Path) -> None:
    home = tmp_path / "gw"
    with StandIn("up", reply="one two three") as up:
        srv = Server(home, "--log-level", "debug", config=provider("up", up.url), env={"UP_KEY": KEY})
        seen: list[str] = []
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as http:
                for path, body in (("/v1/chat/completions", {"model": "up/small", "messages": CHAT}),
                                   ("/api/chat", {"model": "up/small", "messages": CHAT, "stream": False}),
                                   ("/v1/messages", {"model": "up/small", "max_tokens": 9, "messages": CHAT}),
                                   ("/v1/responses", {"model": "up/small", "input": "count"})):
                    ok = http.post(path, json=body)
                    up.faults.append(("status", 401))  # the provider refuses: the error must not carry the key
                    refused = http.post(path, json=body)
                    assert ok.status_code == 200 and refused.status_code == 502, (path, refused.text)
                    seen += [ok.text, refused.text, str(ok.headers), str(refused.headers)]
                for path in ("/metrics", "/v1/models", "/api/models", "/api/tags", "/api/ps", "/api/usage",
                             "/api/health/targets", "/api/logs", "/ui/", "/ui/app.js", "/ui/api.js"):
                    seen.append(http.get(path).text)
        finally:
            srv.stop()
        assert all(r["authorization"] == f"Bearer {KEY}" for r in up.requests if r["method"] == "POST")
    env = {"CORRAL_HOME": str(home), "CORRAL_CONFIG": str(home / "config.toml"), "UP_KEY": KEY}
    for args in (("config", "show"), ("config", "show", "--json"), ("config", "validate"), ("logs", "--json"),
                 ("list", "--json"), ("usage", "--json")):
        done = run_cli(*args, env=env)
        seen += [done.stdout, done.stderr]
    assert "${UP_KEY}" in "".join(seen)  # shown as the variable it comes from
    assert not [text for text in seen if KEY in text]
    written = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert (b"PLANTED" not in written and "debug" in srv.log.read_text().lower()) or KEY not in srv.log.read_text()


def test_a_key_in_clear_is_refused_without_being_echoed(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[providers.up]\ntype = "openai"\nbase_url = "http://127.0.0.1:9"\n'
                      f'api_key = "{KEY}"\n')
    env = {"CORRAL_CONFIG": str(config)}
    for args in (("config", "validate"), ("config", "show"), ("list",)):
        done = run_cli(*args, env=env)
        assert done.returncode != 0 and "never written in clear" in done.stderr + done.stdout, args
        assert KEY not in done.stdout + done.stderr
