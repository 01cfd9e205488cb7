"""A LiteLLM provider (the long tail's one optional provider type) against the stand-in OpenAI
upstream: LiteLLM's own model string after the provider's name (`tail/openai/small`), its retries
off (a 500 falls back to the next target at once), its stream with the upstream's usage, embeddings;
health cannot check it for free (unknown, not down), --deep can; importing LiteLLM fetched nothing
from the network (its price map is read from the package)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from tests.gateway.scenario import Call, play
from tests.gateway.standin_openai import StandIn, vector

from corral.config import load_settings
from corral.runtime.health import check
from corral.runtime.runtime import RuntimeOptions, build_runtime
from corral.tasks import ChatRequest, EmbedRequest, Message, Sampling, Task, TextChunk

pytestmark = pytest.mark.timeout(120)


def test_litellm_chat_fallback_embed_and_health(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LITELLM_LOCAL_MODEL_COST_MAP", raising=False)
    monkeypatch.setenv("TAIL_KEY", "sk-tail")
    with StandIn("tail", reply="one two three four") as tail, StandIn("b") as b:
        (tmp_path / "config.toml").write_text(
            f'[providers.tail]\ntype = "litellm"\nbase_url = "{tail.url}"\napi_key = "${{TAIL_KEY}}"\n'
            f'[providers.b]\ntype = "openai"\nbase_url = "{b.url}"\nretries = {{ max = 0, backoff = 0 }}\n'
            "[providers.tail.retries]\nmax = 0\nbackoff = 0\n"
            '[aliases]\nlong = ["tail/openai/small", "b/small"]\n[aliases.only]\ntargets = ["tail/openai/small"]\n'
            "required = true\n")
        runtime = build_runtime(load_settings(), options=RuntimeOptions(budget_bytes=2**30))
        chat = ChatRequest((Message("user", "count"),), sampling=Sampling(max_tokens=3, temperature=0.0))

        calls: list[Call] = [("long", Task.CHAT, chat, None), ("long", Task.CHAT, chat, ("status", 500)),
                             ("tail/openai/small", Task.EMBED, EmbedRequest(("a b",)), None)]
        plain, fell_back, embedded, health, deep = play(runtime, calls, tail.faults,
                                                        [check, functools.partial(check, deep=True)])
    assert os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP") == "True"  # set before the import, by corral
    assert "".join(c.text for c in plain if isinstance(c, TextChunk)) == "one two three"
    assert plain[-1].usage.completion_tokens == 3 and plain[-1].finish_reason in ("stop", "length")
    posted = [r for r in tail.requests if r["method"] == "POST"]
    assert posted[0]["body"]["model"] == "small" and posted[0]["authorization"] == "Bearer sk-tail"
    assert "".join(c.text for c in fell_back if isinstance(c, TextChunk)) == "hello from b"
    chats = [r["body"]["max_tokens"] for r in posted if r["path"].endswith("chat/completions")]
    assert chats == [3, 3, 1]  # the answer, the 500 (LiteLLM did not retry it), the --deep check's one token
    assert [list(v) for v in embedded[0].vectors] == [vector("a b")]
    only = {a["alias"]: a for a in health["aliases"]}["only"]
    assert only["up"] is None and health["ok"]  # cannot be told for free: unknown, not down
    assert {a["alias"]: a for a in deep["aliases"]}["only"]["up"] is True
