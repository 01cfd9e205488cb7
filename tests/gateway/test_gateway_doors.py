"""Remote models through the Ollama, Anthropic and Responses doors: one `corral serve` routing to a
stand-in OpenAI-compatible provider, each official client (ollama, anthropic, openai.responses)
unchanged, an alias chain among Ollama's tags, every call logged with its door and priced in one
ledger."""

from __future__ import annotations

from pathlib import Path

import anthropic
import ollama
import pytest
from openai import OpenAI
from tests.gateway.standin_openai import StandIn
from tests.gateway.test_gateway_http import provider
from tests.server.conftest import Server

from corral.runtime.requestlog import latest

pytestmark = pytest.mark.timeout(120)
REPLY = "one two three four five six"


def test_remote_models_answer_through_every_door(tmp_path: Path) -> None:
    with StandIn("up", reply=REPLY) as up:
        config = provider("up", up.url) + '[aliases]\nfast = ["up/small", "up/other"]\n'
        srv = Server(tmp_path / "gw", config=config, env={"UP_KEY": "sk-test"})
        try:
            local = ollama.Client(host=srv.url)
            tags = {m.model for m in local.list().models}
            assert {"fast:latest", "up/small:latest"} <= tags  # aliases and the remote models they name
            said = local.chat(model="fast:latest", messages=[{"role": "user", "content": "count"}])
            assert said.message.content == REPLY and said.eval_count == 6
            parts = list(local.generate(model="up/small", prompt="count", stream=True))
            assert "".join(p.response for p in parts) == REPLY and parts[-1].done
            claude = anthropic.Anthropic(base_url=srv.url, api_key="unused")
            message = claude.messages.create(model="up/small", max_tokens=20,
                                             messages=[{"role": "user", "content": "count"}])
            assert message.content[0].text == REPLY and message.usage.output_tokens == 6  # type: ignore[union-attr]
            with claude.messages.stream(model="fast", max_tokens=20,
                                        messages=[{"role": "user", "content": "count"}]) as stream:
                assert "".join(stream.text_stream) == REPLY
            answered = OpenAI(base_url=f"{srv.url}/v1", api_key="unused").responses.create(model="fast", input="count")
            assert answered.output_text == REPLY
        finally:
            srv.stop()
    rows = latest(srv.home / "requests.db", 10)
    assert [(r["door"], r["route"], r["target"], r["status"]) for r in reversed(rows)] == [
        ("ollama", "/api/chat", "up/small", 200), ("ollama", "/api/generate", "up/small", 200),
        ("anthropic", "/v1/messages", "up/small", 200), ("anthropic", "/v1/messages", "up/small", 200),
        ("responses", "/v1/responses", "up/small", 200)]
    assert all(r["completion_tokens"] == 6 and r["price_source"] for r in rows)  # one ledger for every door
