"""The catalogue's row 14 (issue 18): an engine that fails after 3 tokens, and one that stalls.

In-process over the HTTP door with the fake engine. A failure mid-stream ends the stream with an
error event and ``[DONE]``; the next request is served. A stream whose engine produces nothing for
``--stall-timeout`` seconds fails at once (504 before the first byte, an error event after it),
logged 504; the engine's slot stays taken until its thread has really ended (a stuck engine is not
given a second request), then comes back: a request queued behind the stalled one is served next."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fake_engine import FakeHandler, loaded_fake
from tests.server.test_fake_http import CHAT, chat_body, fake_runtime, register, run, serving, sse, until

from corral.runtime.requestlog import latest

pytestmark = pytest.mark.timeout(60)


def all_done(engine: FakeHandler) -> bool:
    return all(g.ended or g.closed for g in engine.generations)


def text_of(events: list[Any]) -> str:
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events
                   if isinstance(e, dict) and e.get("choices"))


def test_an_engine_failing_after_three_tokens_ends_the_stream_and_the_next_request_works(tmp_path: Path) -> None:
    register(tmp_path, "broken", fail_after=3)
    register(tmp_path, "echo")

    async def scenario() -> list[httpx.Response]:
        async with serving(fake_runtime()) as (app, http):
            streamed = await http.post(CHAT, json=chat_body("one two three four five", model="broken", stream=True))
            as_served = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # what uvicorn would send
            async with httpx.AsyncClient(transport=as_served, base_url="http://127.0.0.1") as plain:
                whole = await plain.post(CHAT, json=chat_body("one two three four five", model="broken"))
            again = await http.post(CHAT, json=chat_body("still serving", model="echo"))
            return [streamed, whole, again]

    streamed, whole, again = run(scenario())
    events = sse(streamed.text)
    assert streamed.status_code == 200 and text_of(events) == "one two three"
    assert events[-1] == "[DONE]" and "error" in events[-2]
    assert events[-2]["error"]["message"] == "internal error: RuntimeError"
    assert whole.status_code == 500 and "error" in whole.json()  # the engine crashed: an internal error, in shape
    assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"] == "still serving"


def test_a_stalled_stream_fails_with_an_error_event_and_its_slot_comes_back_when_the_engine_ends(
        tmp_path: Path, corral_home: Path) -> None:
    register(tmp_path, "slow", hold=True)  # every token after the first waits for the test's release

    async def scenario() -> tuple[httpx.Response, list[str], httpx.Response, list[int]]:
        runtime = fake_runtime(stall_timeout=0.3)
        async with serving(runtime) as (_, http):
            first = await http.post(CHAT, json=chat_body("one two three", model="slow", stream=True))
            gate = runtime.registry.models["slow"].serving.gate  # type: ignore[union-attr]
            engine = loaded_fake(runtime, "slow")
            held = (gate.stalled, gate.running)
            order: list[str] = []

            async def queued() -> httpx.Response:
                answer = await http.post(CHAT, json=chat_body("next in line", model="slow", max_tokens=1))
                order.append("queued request answered")
                return answer

            behind = asyncio.ensure_future(queued())
            await until(lambda: gate.waiting == 1)  # the stuck engine still holds the only slot
            order.append("engine released")
            engine.release.set()
            second = await behind
            return first, order, second, [*held, gate.stalled, gate.running, len(engine.generations)]

    first, order, second, counts = run(scenario())
    events = sse(first.text)
    assert first.status_code == 200 and text_of(events) == "one"
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "StalledError"
    assert "produced nothing for 0.3 s" in events[-2]["error"]["message"]
    assert "--stall-timeout" in events[-2]["error"]["message"]
    assert order == ["engine released", "queued request answered"]
    assert second.status_code == 200 and second.json()["choices"][0]["message"]["content"] == "next"
    assert counts == [1, 0, 0, 0, 2]  # stalled slot held (not running), then given back; two generations
    rows = latest(corral_home / "requests.db", 2)
    assert sorted(row["status"] for row in rows) == [200, 504]


def test_a_stall_before_the_answer_starts_is_a_504_and_a_stall_timeout_of_minus_one_never_fires(
        tmp_path: Path) -> None:
    register(tmp_path, "slow", hold=True)

    async def scenario() -> tuple[httpx.Response, list[bool]]:
        runtime = fake_runtime(stall_timeout=0.3)
        async with serving(runtime) as (_, http):
            whole = await http.post(CHAT, json=chat_body("one two", model="slow"))
            loaded_fake(runtime, "slow").release.set()
        patient = fake_runtime(stall_timeout=-1)
        async with serving(patient) as (_, http):
            waiting = asyncio.ensure_future(http.post(CHAT, json=chat_body("one two", model="slow")))
            await until(lambda: "slow" in patient.registry.models)
            engine = loaded_fake(patient, "slow")
            await asyncio.to_thread(engine.wait_until, lambda: any(g.waiting for g in engine.generations))
            await asyncio.sleep(0.6)  # twice the other runtime's stall timeout: nothing fires here
            still = [waiting.done()]
            engine.release.set()
            answer = await waiting
            return whole, [*still, answer.status_code == 200, answer.json()["choices"][0]["message"]["content"]
                           == "one two"]

    whole, checks = run(scenario())
    assert whole.status_code == 504 and whole.json()["error"]["code"] == "StalledError"
    assert checks == [False, True, True]


def test_ollama_and_anthropic_streams_end_with_their_own_error_after_a_stall(tmp_path: Path) -> None:
    register(tmp_path, "slow", hold=True)

    async def scenario() -> list[httpx.Response]:
        runtime = fake_runtime(stall_timeout=0.3)
        answers = []
        async with serving(runtime) as (_, http):
            for route, body in [("/api/chat", {"model": "slow", "messages": [{"role": "user", "content": "a b"}]}),
                                ("/v1/messages", {"model": "slow", "max_tokens": 5, "stream": True,
                                                  "messages": [{"role": "user", "content": "a b"}]})]:
                answers.append(await http.post(route, json=body))
                engine = loaded_fake(runtime, "slow")
                engine.release.set()
                await asyncio.to_thread(engine.wait_until, functools.partial(all_done, engine))
                engine.release.clear()
        return answers

    ollama, anthropic = run(scenario())
    assert "produced nothing" in ollama.text.splitlines()[-1] and '"error"' in ollama.text.splitlines()[-1]
    assert "event: error" in anthropic.text and "produced nothing" in anthropic.text
