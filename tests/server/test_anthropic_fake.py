"""The Messages routes in-process over the fake engine, driven by the official ``anthropic``
AsyncClient unchanged (its httpx client pointed at the app): an engine failing mid-stream ends the
stream with an ``error`` event the SDK raises (and the next request works), and a client that leaves
mid-stream stops the engine (logged 499 with door anthropic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
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


def client_for(app: Any) -> anthropic.AsyncAnthropic:
    import httpx2  # the anthropic SDK's own HTTP client (a fork of httpx), with the same ASGI transport

    return anthropic.AsyncAnthropic(base_url=f"http://{HOST}", api_key="unused",
                                    http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)))


def test_an_engine_failing_mid_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    register(tmp_path, "broken", fail_after=3)
    register(tmp_path, "echo")
    words = [{"role": "user", "content": "one two three four five six"}]

    async def scenario() -> list[Any]:
        async with serving(fake_runtime()) as (app, _):
            client = client_for(app)
            got: list[str] = []
            with pytest.raises(anthropic.APIError) as failed:
                async with client.messages.stream(model="broken", max_tokens=50, messages=words) as stream:
                    async for text in stream.text_stream:
                        got.append(text)
            after = await client.messages.create(model="echo", max_tokens=50, messages=words)
            return [got, str(failed.value), after.content[0].text]

    got, error, after = run(scenario())
    assert "".join(got) == "one two three" and "internal error" in error
    assert after == "one two three four five six"


def test_a_client_that_leaves_mid_stream_stops_the_engine(tmp_path: Path, corral_home: Path) -> None:
    body = {"model": "echo", "max_tokens": 10_000, "stream": True, "messages": [{"role": "user", "content": "la"}]}
    assert leaving_stops_the_engine(tmp_path, "/v1/messages", body) == [200, True, False]
    row = latest(corral_home / "requests.db", 1)[0]
    assert (row["door"], row["status"]) == ("anthropic", 499)


def test_stop_sequences_and_sampling_fields(tmp_path: Path) -> None:
    register(tmp_path, "echo")
    words = [{"role": "user", "content": "one two three four five six"}]

    async def scenario() -> list[Any]:
        async with serving(fake_runtime()) as (app, _):
            client = client_for(app)
            stopped = await client.messages.create(model="echo", max_tokens=50, messages=words,
                                                   stop_sequences=["four"])
            capped = await client.messages.create(model="echo", max_tokens=2, messages=words,
                                                  extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5})
            return [stopped, capped]

    stopped, capped = run(scenario())
    assert stopped.content[0].text == "one two three " and stopped.stop_reason == "end_turn"
    assert capped.content[0].text == "one two" and capped.stop_reason == "max_tokens"
    assert capped.usage.output_tokens == 2
