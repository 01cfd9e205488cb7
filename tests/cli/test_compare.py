"""`corral compare` on a local model and two remote ones (stand-in upstreams): every metric cell
filled for each (load time and memory for the local one only), the --json shape, the local answer
equal to `run`'s, --repeat K calls each remote K times, a failing model shown in its column (exit 1),
and one model or more than six an exit 2. Timing is never asserted, only present."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.gateway.standin_openai import StandIn

from corral.cli.compare import ROWS

PROMPT = ("Name a fruit.", "--temperature", "0", "--max-tokens", "8")


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[tuple[StandIn, StandIn]]:
    with StandIn("a", reply="apple is red") as a, StandIn("b", reply="banana") as b:
        (tmp_path / "config.toml").write_text("".join(
            f'[providers.{u.name}]\ntype = "openai"\nbase_url = "{u.url}"\nretries = {{ max = 0, backoff = 0 }}\n'
            f'prices = {{ "small" = {{ input = 1.0, output = 2.0 }} }}\n' for u in (a, b)))
        yield a, b


def test_a_local_and_two_remote_models(ups: tuple[StandIn, StandIn]) -> None:
    r = run_cli("compare", "smollm2", "a/small", "b/small", *PROMPT, "--json", input="")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["prompt"], out["repeat"], out["concurrent"]) == ("Name a fruit.", 1, False)
    local, a, b = out["results"]
    ran = json.loads(run_cli("run", "smollm2", *PROMPT, "--json", input="").stdout)
    assert (local["local"], local["text"]) == (True, ran["text"])
    assert local["tokens_out"] == ran["usage"]["completion_tokens"]
    assert local["load_s"] > 0 and local["memory_bytes"] > 0 and local["price_source"] == "local_time"
    assert (a["text"], a["target"], b["text"]) == ("apple is red", "a/small", "banana")
    for row in (local, a, b):
        assert row["error"] is None and row["runs"] == 1
        assert row["ttft_s"] > 0 and row["total_s"] >= row["ttft_s"] and row["tokens_per_s"] > 0
        assert row["tokens_in"] > 0 and row["tokens_out"] > 0 and row["cost_usd"] is not None
    for row in (a, b):
        assert row["local"] is False and row["load_s"] is None and row["memory_bytes"] is None
        assert row["cost_usd"] == (5 * 1.0 + row["tokens_out"] * 2.0) / 1e6


def test_the_table_shows_every_cell(ups: tuple[StandIn, StandIn]) -> None:
    r = run_cli("compare", "smollm2", "a/small", "b/small", *PROMPT, env={"COLUMNS": "160"}, input="")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = " ".join(lines[1:3])  # a remote model's name breaks after its provider: "a/" over "small"
    assert "smollm2" in header and header.count("small") == 2 and "a/" in header and "b/" in header
    assert any("apple is red" in line and "banana" in line for line in lines)
    for label, _ in ROWS:
        (row,) = [line for line in lines if line.startswith(f"│ {label} ")]
        cells = [c.strip() for c in row.strip("│").split("│")][1:]
        assert len(cells) == 3 and all(cells), (label, cells)
        if label in ("load time", "memory"):
            assert cells[0] not in ("-", "already loaded") and cells[1:] == ["-", "-"]
        else:
            assert "-" not in cells, (label, cells)


def test_repeat_errors_and_model_counts(ups: tuple[StandIn, StandIn]) -> None:
    a, b = ups
    r = run_cli("compare", "a/small", "b/small", "hi", "--repeat", "3", "--json", input="")
    assert r.returncode == 0 and [row["runs"] for row in json.loads(r.stdout)["results"]] == [3, 3]
    assert (a.billed, b.billed) == (3, 3)
    b.faults.append(("status", 404))
    failed = run_cli("compare", "a/small", "b/small", "hi", input="", env={"COLUMNS": "160"})
    assert failed.returncode == 1 and "error: provider b has no such model" in failed.stdout
    assert "apple is red" in failed.stdout
    one = run_cli("compare", "a/small", "hi", input="")
    seven = run_cli("compare", *["a/small"] * 7, "hi", input="")
    for refused in (one, seven):
        assert refused.returncode == 2 and "compare takes 2 to 6 models" in refused.stderr
    unknown = run_cli("compare", "a/small", "nope", "hi", input="")
    assert unknown.returncode == 1 and "nope" in unknown.stderr and a.billed == 4
