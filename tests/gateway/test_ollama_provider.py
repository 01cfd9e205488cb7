"""An Ollama provider over its native API against a stand-in: chat and generate stream as NDJSON
with Ollama's own counts and done reason, sampling in options (num_predict), embeddings; a model not
pulled is a 404 at once; an error line before any text falls back, after text ends the stream in
error; health reads /api/tags for free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.gateway.scenario import play
from tests.gateway.standin_ollama import ollama_standin
from tests.gateway.standin_openai import StandIn, vector

from corral.config import load_settings
from corral.engines.remote.base import RemoteError
from corral.runtime.health import check
from corral.runtime.router import StreamBrokenError
from corral.runtime.runtime import RuntimeOptions, build_runtime
from corral.tasks import ChatRequest, CompletionRequest, EmbedRequest, Message, Sampling, Task, TextChunk


def test_chat_generate_embed_errors_and_health(tmp_path: Path) -> None:
    with ollama_standin("home", reply="one two three four five") as home, StandIn("b") as b:
        (tmp_path / "config.toml").write_text(
            f'[providers.home]\ntype = "ollama"\nbase_url = "{home.url}"\nretries = {{ max = 0, backoff = 0 }}\n'
            f'[providers.b]\ntype = "openai"\nbase_url = "{b.url}"\nretries = {{ max = 0, backoff = 0 }}\n'
            '[aliases]\nlocal = ["home/llama3.2:3b", "b/small"]\n')
        runtime = build_runtime(load_settings(), options=RuntimeOptions(budget_bytes=2**30))
        sampling = Sampling(max_tokens=3, temperature=0.0, seed=7)
        chat = ChatRequest((Message("user", "count"),), sampling=sampling)
        calls: list[tuple[str, Task, Any, tuple[Any, ...] | None]] = [
            ("home/llama3.2:3b", Task.CHAT, chat, None),
            ("home/llama3.2:3b", Task.COMPLETE, CompletionRequest("count", sampling=sampling), None),
            ("home/nomic-embed-text", Task.EMBED, EmbedRequest(("a b", "c")), None),
            ("home/nope", Task.CHAT, chat, ("status", 404)),
            ("local", Task.CHAT, chat, ("error_line", 0)),
            ("local", Task.CHAT, ChatRequest((Message("user", "count"),)), ("error_line", 2))]

        chatted, generated, embedded, missing, early, late, health = play(runtime, calls, home.faults, [check])
    for answer in (chatted, generated):
        assert "".join(c.text for c in answer if isinstance(c, TextChunk)) == "one two three"
        assert answer[-1].finish_reason == "length" and answer[-1].usage.prompt_tokens == 9
        assert answer[-1].usage.completion_tokens == 3
    posted = [r for r in home.requests if r["method"] == "POST"]
    assert posted[0]["path"] == "/api/chat" and posted[0]["body"]["messages"] == [{"role": "user", "content": "count"}]
    assert posted[0]["body"]["options"] == {"num_predict": 3, "temperature": 0.0, "top_p": 0.95, "seed": 7}
    assert posted[1]["path"] == "/api/generate" and posted[1]["body"]["prompt"] == "count"
    assert [list(v) for v in embedded[0].vectors] == [vector("a b"), vector("c")]
    assert isinstance(missing, RemoteError) and missing.http_status == 404 and "not found" in missing.message
    assert "".join(c.text for c in early if isinstance(c, TextChunk)) == "hello from b"
    assert isinstance(late, StreamBrokenError) and "mid-answer" in late.message
    targets = {t["target"]: t for t in health["targets"]}
    assert targets["home/llama3.2:3b"]["up"] and targets["home/llama3.2:3b"]["model_present"]
