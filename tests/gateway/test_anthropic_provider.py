"""An Anthropic provider through the official SDK against a stand-in Messages API: the chat streams
with Anthropic's token counts and stop reason, system messages become the system prompt, the key
goes in x-api-key; an overloaded answer (529, or an error event before any text) falls back to the
next target, one after the first words ends the stream in error; health lists the models for free."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.gateway.scenario import play
from tests.gateway.standin_anthropic import anthropic_standin
from tests.gateway.standin_openai import StandIn

from corral.config import load_settings
from corral.runtime.health import check
from corral.runtime.router import StreamBrokenError
from corral.runtime.runtime import RuntimeOptions, build_runtime
from corral.tasks import ChatRequest, Message, Sampling, Task, TextChunk

KEY = "sk-ant-PLANTED-0123"


def test_chat_fallback_and_health(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_KEY", KEY)
    with anthropic_standin("claude", reply="one two three four five") as claude, StandIn("b") as b:
        (tmp_path / "config.toml").write_text(
            f'[providers.claude]\ntype = "anthropic"\nbase_url = "{claude.url}"\napi_key = "${{CLAUDE_KEY}}"\n'
            "retries = { max = 0, backoff = 0 }\n"
            f'[providers.b]\ntype = "openai"\nbase_url = "{b.url}"\nretries = {{ max = 0, backoff = 0 }}\n'
            '[aliases]\nsmart = ["claude/claude-haiku-4-5", "b/small"]\n')
        runtime = build_runtime(load_settings(), options=RuntimeOptions(budget_bytes=2**30))
        request = ChatRequest((Message("system", "Be brief."), Message("user", "count")),
                              sampling=Sampling(max_tokens=3, temperature=0.0))

        calls = [("smart", Task.CHAT, request, fault)
                 for fault in (None, ("status", 529), ("overloaded", 0), ("overloaded", 2))]
        plain, overloaded, early, late, health = play(runtime, calls, claude.faults, [check])
    assert "".join(c.text for c in plain if isinstance(c, TextChunk)) == "one two three"
    assert plain[-1].finish_reason == "length" and plain[-1].usage.prompt_tokens == 7
    assert plain[-1].usage.completion_tokens == 3
    posted = [r for r in claude.requests if r["method"] == "POST"]
    assert posted[0]["body"]["system"] == "Be brief." and posted[0]["body"]["messages"] == [
        {"role": "user", "content": "count"}] and posted[0]["key"] == KEY
    assert posted[0]["body"]["max_tokens"] == 3
    for answer in (overloaded, early):  # nothing reached the caller: the next target answered
        assert isinstance(answer, list), answer
        assert "".join(c.text for c in answer if isinstance(c, TextChunk)) == "hello from b"
    assert isinstance(late, StreamBrokenError) and "overloaded" in late.message
    targets = {t["target"]: t for t in health["targets"]}
    assert targets["claude/claude-haiku-4-5"]["up"] and targets["claude/claude-haiku-4-5"]["model_present"]
    assert b.billed == 2 and claude.billed == 4
