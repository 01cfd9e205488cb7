"""`corral query`: the chat one-liner streams the same text `run` gives for a local model, reaches
remote models and aliases (the stand-in upstream), puts piped text before the prompt, takes a
system message, reports usage, cost and the serving target with --json, and refuses no prompt."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.gateway.standin_openai import StandIn

GREEDY = ("--temperature", "0", "--max-tokens", "12")


def test_query_streams_what_run_gives() -> None:
    ran = json.loads(run_cli("run", "smollm2", "Name a fruit.", *GREEDY, "--json", input="").stdout)
    plain = run_cli("query", "smollm2", "Name a fruit.", *GREEDY, input="")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == ran["text"] + "\n" and ran["text"]
    queried = json.loads(run_cli("query", "smollm2", "Name a fruit.", *GREEDY, "--json", input="").stdout)
    assert queried["text"] == ran["text"] and queried["usage"] == ran["usage"]
    assert queried["target"] == queried["model"] and queried["price_source"] == "local_time"


def test_query_reaches_remote_models_with_piped_text_and_a_system_message(tmp_path: Path) -> None:
    with StandIn("up", reply="a short summary") as up:
        (tmp_path / "config.toml").write_text(
            f'[providers.up]\ntype = "openai"\nbase_url = "{up.url}"\nretries = {{ max = 0, backoff = 0 }}\n'
            'prices = { "small" = { input = 1.0, output = 2.0 } }\n[aliases]\nfast = ["up/small", "smollm2"]\n')
        r = run_cli("query", "fast", "summarise", "--system", "Be brief.", "--json", input="line one\nline two\n")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["model"], out["target"], out["text"]) == ("fast", "up/small", "a short summary")
        assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        assert out["cost_usd"] == (5 * 1.0 + 3 * 2.0) / 1e6 and out["price_source"] == "config"
        body = up.requests[-1]["body"]
        assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "line one\nline two\n\nsummarise"}]
        piped_only = run_cli("query", "up/small", input="just this")
        assert piped_only.stdout == "a short summary\n"
        assert up.requests[-1]["body"]["messages"] == [{"role": "user", "content": "just this"}]


def test_query_without_a_prompt_or_model_is_a_clear_error() -> None:
    empty = run_cli("query", "smollm2", input="")
    assert empty.returncode == 2 and "no prompt" in empty.stderr and "Traceback" not in empty.stderr
    unknown = run_cli("query", "no-such-model", "hi", input="")
    assert unknown.returncode == 1 and "no-such-model" in unknown.stderr and "Traceback" not in unknown.stderr
