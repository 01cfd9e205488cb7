"""`corral run`: streaming to stdout, --json with usage, --system, determinism across processes."""

from __future__ import annotations

import json

from tests.conftest import run_cli

GREEDY = ("--temperature", "0", "--seed", "3", "--max-tokens", "16")


def test_run_json_has_usage_and_is_deterministic() -> None:
    first = json.loads(run_cli("run", "smollm2", "Name a fruit.", *GREEDY, "--json").stdout)
    second = json.loads(run_cli("run", "smollm2", "Name a fruit.", *GREEDY, "--json").stdout)
    assert first["text"] == second["text"] and first["text"]
    assert first["task"] == "chat" and first["finish_reason"] in ("stop", "length")
    usage = first["usage"]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_run_streams_plain_text_same_as_json() -> None:
    plain = run_cli("run", "smollm2", "Name a fruit.", *GREEDY)
    js = json.loads(run_cli("run", "smollm2", "Name a fruit.", *GREEDY, "--json").stdout)
    assert plain.returncode == 0 and plain.stdout == js["text"] + "\n"


def test_system_prompt_changes_the_prompt() -> None:
    base = json.loads(run_cli("run", "smollm2", "Hi", *GREEDY, "--json").stdout)
    sys_ = json.loads(run_cli("run", "smollm2", "Hi", *GREEDY, "--json", "--system", "Answer in French.").stdout)
    assert sys_["usage"]["prompt_tokens"] != base["usage"]["prompt_tokens"]


def test_raw_completion_and_stdin_prompt() -> None:
    r = run_cli("run", "smollm2", "--raw", *GREEDY, "--json", input="The capital of France is")
    out = json.loads(r.stdout)
    assert out["task"] == "complete"
    assert out["usage"]["prompt_tokens"] == 5  # SmolLM2 adds no BOS: exactly the five words


def test_stop_and_max_tokens_flags() -> None:
    full = json.loads(run_cli("run", "smollm2", "Count to ten.", *GREEDY, "--json").stdout)["text"]
    cut = full.strip()[3:5]
    out = json.loads(run_cli("run", "smollm2", "Count to ten.", *GREEDY, "--json", "--stop", cut).stdout)
    assert out["text"] == full[: full.find(cut)] and out["finish_reason"] == "stop"
    short = json.loads(run_cli("run", "smollm2", "Count to ten.", "--temperature", "0", "--max-tokens", "2",
                               "--json").stdout)
    assert short["usage"]["completion_tokens"] == 2 and short["finish_reason"] == "length"


def test_run_and_embed_are_logged_with_door_cli() -> None:
    assert run_cli("run", "smollm2", "Hi", "--temperature", "0", "--max-tokens", "3").returncode == 0
    assert run_cli("embed", "minilm", "one", "two").returncode == 0
    rows = json.loads(run_cli("logs", "--json").stdout)
    run, embed = reversed(rows[:2])
    assert (run["door"], run["task"], run["route"], run["status"]) == ("cli", "chat", "run", 200)
    assert run["model"] == "smollm2"
    assert run["completion_tokens"] == 3 and run["ttft_ms"] > 0
    assert (embed["door"], embed["task"], embed["route"], embed["status"]) == ("cli", "embed", "embed", 200)
    assert embed["prompt_tokens"] > 0
    shown = run_cli("logs").stdout
    assert "cli" in shown and "embed" in shown


def test_chat_turns_are_logged_with_door_cli() -> None:
    """Each turn of `corral chat` is one runtime call: a log row per turn, door cli, task chat."""
    r = run_cli("chat", "smollm2", "--temperature", "0", "--max-tokens", "2", input="Hello\nAgain\n/exit\n")
    assert r.returncode == 0, r.stderr
    rows = json.loads(run_cli("logs", "--json").stdout)
    second, first = rows[:2]
    for row in (first, second):
        assert (row["door"], row["task"], row["route"], row["status"]) == ("cli", "chat", "chat", 200)
        assert row["completion_tokens"] == 2
    assert second["prompt_tokens"] > first["prompt_tokens"]  # the second turn carries the history


def test_dtype_is_checked_against_the_engine_table() -> None:
    full = json.loads(run_cli("embed", "minilm", "hello world", "--json").stdout)["data"][0]["embedding"]
    half = json.loads(run_cli("embed", "minilm", "hello world", "--json", "--dtype", "bfloat16").stdout)
    bf16 = half["data"][0]["embedding"]
    assert bf16 != full  # the weights really ran in bfloat16
    assert sum(a * b for a, b in zip(full, bf16, strict=True)) > 0.99  # and it is still the same model
    r = run_cli("run", "smollm2", "hi", "--dtype", "float16")
    assert r.returncode == 2 and "--dtype does not apply" in r.stderr and "Traceback" not in r.stderr
