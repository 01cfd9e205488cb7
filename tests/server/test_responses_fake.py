"""The Responses route in-process over the fake engine, driven by the official ``openai``
AsyncOpenAI unchanged (its httpx client pointed at the app): an engine failing mid-stream ends the
stream with an ``error`` event, which the SDK yields as the stream's last (and the next request
works); a client that leaves mid-stream stops the engine (logged 499 with door responses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
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


def test_an_engine_failing_mid_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    register(tmp_path, "broken", fail_after=3)
    register(tmp_path, "echo")

    async def scenario() -> list[Any]:
        async with serving(fake_runtime()) as (app, _):
            client = AsyncOpenAI(base_url=f"http://{HOST}/v1", api_key="unused",
                                 http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))
            events = [e async for e in await client.responses.create(model="broken", input="one two three four five",
                                                                      stream=True)]
            after = await client.responses.create(model="echo", input="still here")
            return [events, after.output_text]

    events, after = run(scenario())
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "one two three" and "response.completed" not in [e.type for e in events]
    assert events[-1].type == "error" and "internal error" in events[-1].message  # the stream's last word
    assert after == "still here"


def test_a_client_that_leaves_mid_stream_stops_the_engine(tmp_path: Path, corral_home: Path) -> None:
    body = {"model": "echo", "input": "la", "max_output_tokens": 10_000, "stream": True}
    assert leaving_stops_the_engine(tmp_path, "/v1/responses", body) == [200, True, False]
    row = latest(corral_home / "requests.db", 1)[0]
    assert (row["door"], row["status"]) == ("responses", 499)
