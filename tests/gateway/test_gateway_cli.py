"""Remote models and alias chains from the CLI, against a stand-in upstream: `corral run` streams
the upstream's answer (chat, or an alias chain), `--json` says which model and what usage;
`corral embed` returns its vectors; `corral list` shows the remote models the config names and the
chains; an unset key is a clear error naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.gateway.standin_openai import StandIn, vector

KEY = "sk-PLANTED-0123456789"


def write_config(path: Path, url: str) -> None:
    path.write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{url}"\napi_key = "${{UP_KEY}}"\n'
                    "retries = { max = 0, backoff = 0 }\n"
                    '[aliases]\nfast = ["up/small", "smollm2"]\nremote = "up/other"\n')


def test_run_embed_and_list(tmp_path: Path) -> None:
    env = {"UP_KEY": KEY}
    with StandIn("up") as up:
        write_config(tmp_path / "config.toml", up.url)
        ran = run_cli("run", "up/small", "hello", env=env)
        assert ran.returncode == 0 and ran.stdout.strip() == "hello from up", ran.stderr
        chained = json.loads(run_cli("run", "fast", "hello", "--json", env=env).stdout)
        assert chained["model"] == "fast" and chained["text"] == "hello from up"
        assert chained["usage"]["completion_tokens"] == 3
        named = run_cli("run", "remote", "hello", env=env)
        assert named.stdout.strip() == "hello from up" and up.requests[-1]["body"]["model"] == "other"
        embedded = run_cli("embed", "up/small", "one two", "x", "--json", env=env)
        vectors = [d["embedding"] for d in json.loads(embedded.stdout)["data"]]
        assert vectors == [vector("one two"), vector("x")]
        listed = run_cli("list", "--aliases", env=env).stdout
        assert "up/small" in listed and "up/other" in listed and "up/small -> smollm2" in listed
        rows = json.loads(run_cli("list", "--aliases", "--json", env=env).stdout)
        assert {"kind": "remote", "name": "up/small", "provider": "up", "upstream": "small", "type": "openai"} in rows
        unset = run_cli("run", "up/small", "hello", env={"UP_KEY": ""})
        assert unset.returncode == 1 and "UP_KEY is not set" in unset.stderr and "Traceback" not in unset.stderr
        assert KEY not in "".join(r.stdout + r.stderr for r in (ran, named, embedded))


def test_the_sidecar_reaches_remote_models(tmp_path: Path) -> None:
    from corral.sidecar.client import SidecarClient

    with StandIn("up") as up:
        write_config(tmp_path / "config.toml", up.url)
        env = {"UP_KEY": KEY, "CORRAL_CONFIG": str(tmp_path / "config.toml"), "CORRAL_HOME": str(tmp_path / "home")}
        with SidecarClient(env=env) as sidecar:
            messages = [{"role": "user", "content": "hi"}]
            whole = sidecar.call("chat", {"model": "fast", "messages": messages}, timeout=60)
            assert whole["choices"][0]["message"]["content"] == "hello from up"
            deltas = list(sidecar.stream("chat", {"model": "up/small", "messages": messages}).deltas(timeout=60))
            assert "".join(c["delta"].get("content") or "" for d in deltas for c in d["choices"]) == "hello from up"
        assert [r["body"]["model"] for r in up.requests if r["method"] == "POST"] == ["small", "small"]


def test_list_remote_asks_the_provider_for_free(tmp_path: Path) -> None:
    with StandIn("up") as up:
        write_config(tmp_path / "config.toml", up.url)
        listed = run_cli("list", "--remote", "up", "--json", env={"UP_KEY": KEY})
        assert json.loads(listed.stdout) == ["up/small"] and up.billed == 0
        assert run_cli("list", "--remote", "up", env={"UP_KEY": KEY}).stdout.strip() == "up/small"
        unknown = run_cli("list", "--remote", "nobody")
        assert unknown.returncode == 2 and "no provider named 'nobody' (providers: up)" in unknown.stderr
