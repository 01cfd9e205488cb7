"""Ollama's routes in-process over the fake engine (tests/fake_engine.py), driven by the official
``ollama`` AsyncClient unchanged (its httpx transport pointed at the app): tool calls parsed from
what the model writes, a tool round trip, an engine that fails mid-stream (an error line, then the
end; the next request works), a client that leaves mid-stream (the engine stops, the call is logged
499 with door ollama), and bad input in Ollama's error shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from tests.server.test_fake_http import (
    HOST,
    fake_runtime,
    leaving_stops_the_engine,
    register,
    run,
    serving,
)

from corral.runtime.requestlog import latest

pytestmark = pytest.mark.timeout(60)
CALL = json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "the weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


def png() -> str:
    import base64
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (2, 2), "red").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


PNG = png()


def client_for(app: Any) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=f"http://{HOST}", transport=httpx.ASGITransport(app=app))


def test_tool_calls_whole_and_streamed(tmp_path: Path) -> None:
    register(tmp_path, "echo")  # the echo model writes back the last message: here, a call

    async def scenario() -> list[Any]:
        async with serving(fake_runtime()) as (app, _):
            client = client_for(app)
            whole = await client.chat(model="echo:latest", messages=[{"role": "user", "content": CALL}], tools=TOOLS)
            parts = [c async for c in await client.chat(model="echo", messages=[{"role": "user", "content": CALL}],
                                                        tools=TOOLS, stream=True)]
            answer = await client.chat(model="echo", tools=TOOLS, messages=[
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                                   "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "22 degrees and sunny", "tool_name": "get_weather"}])
            return [whole, parts, answer]

    whole, parts, answer = run(scenario())
    assert whole.message.content == "" and whole.done_reason == "stop"
    assert [(c.function.name, dict(c.function.arguments)) for c in whole.message.tool_calls] == \
        [("get_weather", {"city": "Paris"})]
    streamed = [c for p in parts for c in p.message.tool_calls or ()]
    assert [(c.function.name, dict(c.function.arguments)) for c in streamed] == [("get_weather", {"city": "Paris"})]
    assert parts[-1].done and all(p.message.role == "assistant" for p in parts)
    assert "22 degrees and sunny" in answer.message.content  # the tool's result reached the model


def test_an_engine_failing_mid_stream_ends_with_an_error_line(tmp_path: Path) -> None:
    register(tmp_path, "broken", fail_after=3)
    register(tmp_path, "echo")

    async def scenario() -> list[Any]:
        async with serving(fake_runtime()) as (app, http):
            client = client_for(app)
            got: list[str] = []
            with pytest.raises(ollama.ResponseError) as failed:
                async for part in await client.generate(model="broken", prompt="one two three four five six",
                                                        stream=True):
                    got.append(part.response)
            raw = await http.post("/api/chat", json={"model": "broken", "messages": [
                {"role": "user", "content": "one two three four five"}]})
            after = await client.generate(model="echo", prompt="still here", stream=False)
            return [got, str(failed.value.error), raw.text.splitlines(), after.response]

    got, error, lines, after = run(scenario())
    assert "".join(got) == "one two three" and "internal error" in error
    assert [json.loads(line).get("done") for line in lines[:3]] == [False, False, False]
    assert json.loads(lines[-1]) == {"error": "internal error: RuntimeError"}
    assert after == "still here"


@pytest.mark.parametrize("route", ["/api/chat", "/api/generate"])
def test_a_client_that_leaves_mid_stream_stops_the_engine(tmp_path: Path, corral_home: Path, route: str) -> None:
    body: dict[str, Any] = {"model": "echo", "options": {"num_predict": 10_000}}
    body.update({"messages": [{"role": "user", "content": "la"}]} if route == "/api/chat" else {"prompt": "la"})
    assert leaving_stops_the_engine(tmp_path, route, body) == [200, True, False]
    row = latest(corral_home / "requests.db", 1)[0]
    assert (row["door"], row["status"]) == ("ollama", 499)


def test_bad_input_gets_ollamas_error_shape(tmp_path: Path) -> None:
    register(tmp_path, "echo")
    register(tmp_path, "vectors", tasks=("embed",))

    async def scenario() -> list[httpx.Response]:
        async with serving(fake_runtime()) as (_, http):
            return [await http.post("/api/chat", json={"model": "echo", "messages": "hello"}),
                    await http.post("/api/chat", content=b"{not json"),
                    await http.post("/api/chat", json={"model": "nosuch", "messages": [{"role": "user",
                                                                                       "content": "x"}]}),
                    await http.post("/api/chat", json={"model": "echo", "messages": [
                        {"role": "user", "content": "x", "images": [PNG]}]}),
                    await http.post("/api/embed", json={"model": "echo", "input": "x"}),
                    await http.post("/api/generate", json={"model": "vectors", "prompt": "x"}),
                    await http.post("/api/chat", json={"model": "echo", "format": 7,
                                                       "messages": [{"role": "user", "content": "x"}]}),
                    await http.post("/api/chat", json={"model": "echo", "options": {"temperature": "hot"},
                                                       "messages": [{"role": "user", "content": "x"}]}),
                    await http.post("/api/pull", json={"model": "/etc/passwd"}),
                    await http.post("/api/chat", json={"model": "echo", "future_field": 1, "think": True,
                                                       "messages": [{"role": "user", "content": "ok"}],
                                                       "stream": False})]

    responses = run(scenario())
    *bad, fine = responses
    for r in bad:
        assert 400 <= r.status_code < 500 and set(r.json()) == {"error"} and isinstance(r.json()["error"], str), r.text
    assert [r.status_code for r in bad] == [400, 400, 404, 400, 400, 400, 400, 400, 400]
    assert "no model named 'nosuch'" in bad[2].json()["error"]
    assert "echo" in bad[3].json()["error"] and "image" in bad[3].json()["error"]  # a text model, an image
    assert fine.status_code == 200 and fine.json()["message"]["content"] == "ok"  # unknown fields, think: accepted
