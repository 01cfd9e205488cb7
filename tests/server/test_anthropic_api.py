"""corral serve as an Anthropic Messages server, driven by the official ``anthropic`` SDK unchanged
(a real server on 127.0.0.1, the packaged SmolLM2, an API key sent as the SDK sends it, x-api-key):
text answers whole and streamed with the Messages event sequence, system prompts, tools (forced
calls, streamed input_json_delta, a tool_result round trip), structured output, count_tokens, and
errors in Anthropic's shape. The 2026 SDK has no temperature argument: greedy decoding is asked
through ``extra_body``, as any field the SDK does not name."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import jsonschema
import pytest
from tests.server.conftest import Server

KEY = "anthropic-key"
GREEDY = {"extra_body": {"temperature": 0}}
TOOLS = [{"name": "get_weather", "description": "The weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
ASK = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("anthropic"), "--models", "smollm2", "--threads", "2", "--api-key", KEY)
    yield server
    server.stop()


@pytest.fixture
def client(srv: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.url, api_key=KEY)


def test_text_whole_and_streamed(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model="smollm2", max_tokens=12, messages=ASK, **GREEDY)
    assert whole.type == "message" and whole.role == "assistant" and whole.id.startswith("msg_")
    assert whole.stop_reason == "max_tokens" and whole.usage.output_tokens == 12 and whole.usage.input_tokens > 5
    with client.messages.stream(model="smollm2", max_tokens=12, messages=ASK, **GREEDY) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    text = whole.content[0].text
    assert text and final.content[0].text == text
    raw = [k for k in kinds if k not in ("text", "input_json")]  # the SDK's own derived events aside
    assert raw[:2] == ["message_start", "content_block_start"] and raw[-3:] == [
        "content_block_stop", "message_delta", "message_stop"]
    assert set(raw[2:-3]) == {"content_block_delta"}
    assert final.usage.input_tokens == whole.usage.input_tokens and final.usage.output_tokens == 12
    terse = client.messages.create(model="smollm2", max_tokens=12, system="You answer in one word.", messages=ASK,
                                   **GREEDY)
    # the system prompt reached the model (SmolLM2's template puts a default one in when there is none)
    assert terse.usage.input_tokens != whole.usage.input_tokens and terse.content != whole.content


def test_forced_tool_calls_and_a_tool_result(client: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = client.messages.create(model="smollm2", max_tokens=60, tools=TOOLS, tool_choice={"type": "any"},
                                    messages=ask, **GREEDY)
    assert called.stop_reason == "tool_use"
    use = called.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.id.startswith("toolu_")
    jsonschema.validate(use.input, TOOLS[0]["input_schema"])
    with client.messages.stream(model="smollm2", max_tokens=60, tools=TOOLS,
                                tool_choice={"type": "tool", "name": "get_weather"}, messages=ask, **GREEDY) as s:
        kinds = [event.type for event in s]
        streamed = s.get_final_message()
    assert "input_json" in kinds and streamed.stop_reason == "tool_use"
    assert streamed.content[-1].input == use.input
    answer = client.messages.create(model="smollm2", max_tokens=20, tools=TOOLS, messages=[
        *ask, {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name,
                                                 "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "22C and sunny"}]}],
        **GREEDY)
    assert answer.content and answer.content[0].type == "text" and answer.stop_reason in ("end_turn", "max_tokens")


def test_structured_output_and_count_tokens(client: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    shaped = client.messages.create(model="smollm2", max_tokens=60, messages=[{"role": "user", "content": "Colour?"}],
                                    output_config={"format": {"type": "json_schema", "schema": schema}}, **GREEDY)
    jsonschema.validate(json.loads(shaped.content[0].text), schema)
    counted = client.messages.count_tokens(model="smollm2", messages=ASK)
    whole = client.messages.create(model="smollm2", max_tokens=1, messages=ASK)
    assert counted.input_tokens == whole.usage.input_tokens > 5


def test_errors_in_anthropics_shape(srv: Server, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="nosuch", max_tokens=5, messages=ASK)
    assert unknown.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=srv.url, api_key="wrong").messages.create(model="smollm2", max_tokens=5,
                                                                               messages=ASK)
    bearer = httpx.post(f"{srv.url}/v1/messages", headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": "smollm2", "max_tokens": 2, "messages": ASK})
    assert bearer.status_code == 200 and bearer.json()["type"] == "message"  # bearer keys work too
    for body, word in (({"model": "smollm2", "messages": ASK}, "max_tokens"),
                       ({"model": "smollm2", "max_tokens": 5, "messages": [
                           {"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages"),
                       ({"model": "smollm2", "max_tokens": 5, "messages": [{"role": "user", "content": [
                           {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                        "data": PNG}}]}]}, "images")):
        bad = httpx.post(f"{srv.url}/v1/messages", headers={"x-api-key": KEY}, json=body)
        assert bad.status_code == 400 and bad.json()["type"] == "error", bad.text
        assert bad.json()["error"]["type"] == "invalid_request_error" and word in bad.json()["error"]["message"]
    assert client.messages.create(model="smollm2", max_tokens=2, messages=ASK,
                                  extra_body={"some_future_field": 1}).content  # unknown fields are ignored


def _png() -> str:
    import base64
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (2, 2), "blue").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


PNG = _png()
