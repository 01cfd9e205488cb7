"""`corral batch` against the stand-in upstream (which counts calls and the most it saw at once) and
a local model: 50 lines with 3 bad ones write 47 answers and 3 errors naming their lines; at most
--concurrency calls at once; a re-run after SIGINT or SIGKILL halfway redoes no finished id and
completes OUT; --dry-run reports errors by line and calls nothing; an unknown model is an error
before any work; a full disk (/dev/full) is exit 1, not a trace; a local chat model answers as
`run` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.gateway.standin_openai import StandIn, vector

pytestmark = pytest.mark.timeout(300)
BAD = {7: "not json at all", 20: '{"prompt": "x", "max_token": 3}', 33: '{"messages": "hi"}'}


@pytest.fixture
def up(tmp_path: Path) -> Iterator[StandIn]:
    with StandIn("up", reply="fine answer") as standin:
        (tmp_path / "config.toml").write_text(
            f'[providers.up]\ntype = "openai"\nbase_url = "{standin.url}"\nretries = {{ max = 0, backoff = 0 }}\n'
            'prices = { "small" = { input = 1.0, output = 2.0 } }\n')
        yield standin


def write_lines(path: Path, count: int, bad: dict[int, str] | None = None) -> None:
    lines = [(bad or {}).get(n) or json.dumps({"id": f"q{n}", "prompt": f"question {n}", "max_tokens": 2})
             for n in range(1, count + 1)]
    path.write_text("\n".join(lines) + "\n")


def rows(path: Path) -> list[dict[str, object]]:
    """OUT's lines in input order (they are written as calls finish, in any order)."""
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda row: int(str(row["line"])))


def asked(up: StandIn) -> Counter[str]:
    """How often each prompt reached the upstream."""
    return Counter(r["body"]["messages"][-1]["content"] for r in up.requests if r["method"] == "POST")


def test_fifty_lines_three_bad_concurrency_and_a_rerun(up: StandIn, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(source, 50, BAD)
    up.delay = 0.05
    r = run_cli("batch", str(source), "-o", str(out), "--model", "up/small", "--concurrency", "3", input="")
    assert r.returncode == 1 and "50 of 50 results written" in r.stderr and "(3 failed)" in r.stderr, r.stderr
    got = rows(out)
    answers = [row for row in got if row["error"] is None]
    errors = {row["line"]: row for row in got if row["error"] is not None}
    assert len(answers) == 47 and sorted(errors) == sorted(BAD)
    assert {row["id"] for row in answers} == {f"q{n}" for n in range(1, 51) if n not in BAD}
    assert all(row["text"] == "fine answer" and row["target"] == "up/small" for row in answers)
    assert all(row["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7} for row in answers)
    assert all(row["cost_usd"] == (5 * 1.0 + 2 * 2.0) / 1e6 for row in answers)
    assert "not JSON" in errors[7]["error"]["message"] and errors[7]["id"] == 7  # type: ignore[index]
    assert "max_token" in errors[20]["error"]["message"]  # type: ignore[index]
    assert "messages must be" in errors[33]["error"]["message"]  # type: ignore[index]
    assert 2 <= up.max_in_flight <= 3 and up.billed == 47
    again = run_cli("batch", str(source), "-o", str(out), "--model", "up/small", "--concurrency", "3", input="")
    assert "47 already answered" in again.stderr and up.billed == 47  # the bad lines are rechecked, nothing re-asked
    assert sorted(row["line"] for row in rows(out)) == list(range(1, 51))  # still one line per input


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_rerun_after_a_kill_redoes_no_finished_id(how: signal.Signals, up: StandIn, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(source, 24)
    up.delay = 0.15
    argv = [sys.executable, "-m", "corral", "batch", str(source), "-o", str(out), "--model", "up/small", "-c", "2"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ.copy())
    deadline = time.monotonic() + 120
    while (not out.exists() or len(out.read_bytes().splitlines()) < 8) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=60)
    finished = {row["id"] for row in rows(out)}  # every line whole after either signal
    assert 8 <= len(finished) < 24, stderr
    if how is signal.SIGINT:
        assert proc.returncode == 130 and b"run the same command again" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    up.delay = 0
    done = run_cli("batch", str(source), "-o", str(out), "--model", "up/small", input="")
    assert done.returncode == 0, done.stderr
    assert sorted(str(row["id"]) for row in rows(out)) == sorted(f"q{n}" for n in range(1, 25))
    counts = asked(up)
    assert all(counts[f"question {str(i)[1:]}"] == 1 for i in finished)  # no finished id asked twice


def test_dry_run_unknown_model_and_a_full_disk(up: StandIn, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_lines(source, 10, {3: "[1, 2]", 9: '{"input": "x", "prompt": "y"}'})
    dry = run_cli("batch", str(source), "--model", "up/small", "--dry-run", input="")
    assert dry.returncode == 1 and up.billed == 0
    assert dry.stdout.splitlines() == [
        "line 3: a line must be a JSON object, not list",
        "line 9: give exactly one of messages (a chat), prompt (a text) or input (to embed); this line has prompt, "
        "input", "10 lines: 8 valid, 2 with errors"]
    unknown = run_cli("batch", str(source), "-o", str(tmp_path / "o.jsonl"), "--model", "nope", input="")
    assert unknown.returncode == 1 and "nope" in unknown.stderr and not (tmp_path / "o.jsonl").exists()
    full = run_cli("batch", str(source), "-o", "/dev/full", "--model", "up/small", input="")
    assert full.returncode == 1 and "could not write /dev/full" in full.stderr and "Traceback" not in full.stderr


def test_embeddings_and_a_local_chat_model(up: StandIn, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"id": "e1", "input": "one two"}\n{"id": "e2", "input": ["a", "bc"]}\n')
    assert run_cli("batch", str(source), "-o", str(out), "--model", "up/small", input="").returncode == 0
    assert [row["embeddings"] for row in rows(out)] == [[vector("one two")], [vector("a"), vector("bc")]]
    assert [row["cost_usd"] for row in rows(out)] == [2 / 1e6, 2 / 1e6]  # priced when the call returned
    source.write_text('{"prompt": "Name a fruit.", "temperature": 0, "max_tokens": 8}\n'
                      '{"messages": [{"role": "user", "content": "Name a fruit."}], "temperature": 0, '
                      '"max_tokens": 8}\n')
    local = tmp_path / "local.jsonl"
    r = run_cli("batch", str(source), "-o", str(local), "--model", "smollm2", "-c", "2", input="")
    assert r.returncode == 0, r.stderr
    ran = json.loads(run_cli("run", "smollm2", "Name a fruit.", "--temperature", "0", "--max-tokens", "8", "--json",
                             input="").stdout)
    assert [(row["id"], row["text"]) for row in rows(local)] == [
        (1, ran["text"]), (2, ran["text"])]


def test_a_terminal_sees_the_progress_bar(up: StandIn, tmp_path: Path) -> None:
    import pexpect

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(source, 10, {4: "oops"})
    child = pexpect.spawn(sys.executable, ["-m", "corral", "batch", str(source), "-o", str(out), "-m", "up/small"],
                          env={**os.environ, "COLUMNS": "120"}, encoding="utf-8", timeout=120, dimensions=(24, 120))
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before or ""
    assert child.exitstatus == 1 and "10/10" in screen and "failed 1" in screen, screen
    assert "/s" in screen and "ETA" in screen and "10 of 10 results written" in screen


def test_a_line_nested_too_deeply_is_a_bad_line_not_a_crash() -> None:
    from corral.batchfile import parse_line

    item = parse_line(b"[" * 100_000, 3, True)
    assert item.request is None and item.error is not None and "nested too deeply" in item.error
