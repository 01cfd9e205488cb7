"""The router over stand-in OpenAI-compatible upstreams on 127.0.0.1, through the runtime every door
uses: remote names and alias chains, retries with back-off (checked on an injected sleep, never by
timing), fallbacks in order, no fallback once a stream has content, cool-downs that skip and recover,
the context fallback, the first-token timeout, and non-retryable errors answered at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.gateway.scenario import CALL, play
from tests.gateway.standin_openai import StandIn, vector

from corral.config import load_settings
from corral.engines.remote.base import RemoteError
from corral.errors import CorralError
from corral.runtime.router import ChainFailedError, StreamBrokenError
from corral.runtime.runtime import Runtime, RuntimeOptions, build_runtime
from corral.tasks import ChatRequest, EmbedRequest, EmbedResult, Message, Sampling, Task, TextChunk

KEY = "sk-PLANTED-0123456789"


@pytest.fixture
def ups() -> Iterator[tuple[StandIn, StandIn, StandIn]]:
    with StandIn("a") as a, StandIn("b") as b, StandIn("c", reply="the long answer has more words than three") as c:
        yield a, b, c


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def runtime_for(tmp_path: Path, ups: tuple[StandIn, ...], monkeypatch: pytest.MonkeyPatch,
                extra: str = "", total: float = 5) -> tuple[Runtime, Clock]:
    monkeypatch.setenv("STANDIN_KEY", KEY)
    providers = "".join(
        f'[providers.{u.name}]\ntype = "openai"\nbase_url = "{u.url}"\napi_key = "${{STANDIN_KEY}}"\n'
        f"timeout = {{ connect = 2, first_token = 1, total = {total} }}\nretries = {{ max = 2, backoff = 0.5 }}\n"
        f"cooldown = {{ failures = 3, window = 60, seconds = 100 }}\n" for u in ups)
    (tmp_path / "config.toml").write_text(providers + extra)
    clock = Clock()
    runtime = build_runtime(load_settings(), options=RuntimeOptions(budget_bytes=2**30), clock=clock)
    runtime.router.sleep, runtime.router.random = clock.sleep, lambda: 1.0
    return runtime, clock


def chat(text: str = "hi", max_tokens: int = 50) -> ChatRequest:
    return ChatRequest((Message("user", text),), sampling=Sampling(max_tokens=max_tokens, temperature=0.0))


async def collect(runtime: Runtime, name: str, request: Any = None, task: Task = Task.CHAT) -> list[Any]:
    return [c async for c in runtime.run(task, name, request or chat(), CALL)]


def run(runtime: Runtime, *calls: tuple[str, Any, Task]) -> list[list[Any] | CorralError]:
    return play(runtime, [(name, task, request, None) for name, request, task in calls])


def text(chunks: list[Any] | CorralError) -> str:
    assert isinstance(chunks, list), chunks
    return "".join(c.text for c in chunks if isinstance(c, TextChunk))


def test_a_remote_name_streams_the_upstream_answer(tmp_path: Path, ups: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a = ups[0]
    runtime, _ = runtime_for(tmp_path, (a,), monkeypatch)
    got, vectors = run(runtime, ("a/small", chat(), Task.CHAT), ("a/small", EmbedRequest(("one two", "x")), Task.EMBED))
    assert text(got) == "hello from a"
    last = got[-1]  # type: ignore[index]
    assert last.finish_reason == "stop" and last.usage.completion_tokens == 3 and last.usage.prompt_tokens == 5
    posted = [r for r in a.requests if r["method"] == "POST"]
    assert posted[0]["body"]["model"] == "small" and posted[0]["body"]["stream"] is True
    assert posted[0]["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert all(r["authorization"] == f"Bearer {KEY}" for r in posted)
    assert isinstance(vectors, list) and isinstance(vectors[0], EmbedResult)
    assert [list(v) for v in vectors[0].vectors] == [vector("one two"), vector("x")]  # in the input order
    assert vectors[0].usage.prompt_tokens == 3


def test_retries_back_off_then_fall_back_in_order(tmp_path: Path, ups: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _ = ups
    runtime, clock = runtime_for(tmp_path, (a, b), monkeypatch, '[aliases]\nfast = ["a/small", "b/small"]\n')
    a.faults += [("status", 500), ("status", 429, {"Retry-After": "7"})]  # then a answers
    first, = run(runtime, ("fast", chat(), Task.CHAT))
    assert text(first) == "hello from a" and a.billed == 3 and b.billed == 0
    assert clock.slept == [0.5, 7.0]  # 0.5 * 2**0, then Retry-After over 0.5 * 2**1
    a.faults += [("status", 500)] * 3  # every attempt a has (1 + 2 retries) fails: b answers
    clock.slept.clear()
    second, = run(runtime, ("fast", chat(), Task.CHAT))
    assert text(second) == "hello from b" and a.billed == 6 and b.billed == 1
    assert clock.slept == [0.5, 1.0]  # no wait before moving on to b


def test_non_retryable_errors_answer_at_once(tmp_path: Path, ups: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _ = ups
    runtime, clock = runtime_for(tmp_path, (a, b), monkeypatch, '[aliases]\nfast = ["a/small", "b/small"]\n')
    a.faults += [("status", 401), ("status", 404)]
    refused, missing = run(runtime, ("fast", chat(), Task.CHAT), ("fast", chat(), Task.CHAT))
    assert isinstance(refused, RemoteError) and refused.http_status == 502 and "credentials" in refused.message
    assert isinstance(missing, RemoteError) and missing.http_status == 404
    assert b.billed == 0 and a.billed == 2 and clock.slept == []
    assert KEY not in refused.message + (refused.hint or "")


def test_no_fallback_once_the_stream_has_content(tmp_path: Path, ups: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = ups
    runtime, _ = runtime_for(tmp_path, (a, b, c), monkeypatch, '[aliases]\nfast = ["c/small", "b/small"]\n')
    c.faults.append(("cut", 3))

    async def scenario() -> tuple[list[str], BaseException | None]:
        seen: list[str] = []
        async with runtime:
            try:
                async for chunk in runtime.run(Task.CHAT, "fast", chat(), CALL):
                    seen.append(chunk.text)
            except CorralError as exc:
                return seen, exc
        return seen, None

    seen, error = asyncio.run(scenario())
    answer = "the long answer has more words than three"
    assert seen and answer.startswith("".join(seen))  # c's words only, then the error
    assert isinstance(error, StreamBrokenError) and "c/small failed mid-answer" in error.message
    assert b.billed == 0  # never spliced with another model's answer


def test_cooldown_skips_a_failing_target_and_recovers(tmp_path: Path, ups: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _ = ups
    runtime, clock = runtime_for(tmp_path, (a, b), monkeypatch, '[aliases]\nfast = ["a/small", "b/small"]\n')
    a.faults += [("status", 500)] * 3  # three failures within the window: cooled for 100 s

    async def scenario() -> list[str]:
        answers = []
        async with runtime:
            for advance in (0, 10, 101):
                clock.now += advance
                answers.append(text(await collect(runtime, "fast")))
        return answers

    assert asyncio.run(scenario()) == ["hello from b", "hello from b", "hello from a"]
    assert a.billed == 4  # 3 failed attempts, skipped while cooling, then tried again and answered
    metrics = runtime.metrics.render().decode()
    assert 'corral_target_cooldowns_total{target="a/small"} 1.0' in metrics
    assert 'corral_target_retries_total{target="a/small"} 2.0' in metrics  # the third failure cooled it instead
    assert 'corral_target_fallbacks_total{alias="fast",target="a/small"} 1.0' in metrics


def test_context_fallback_and_first_token_timeout(tmp_path: Path, ups: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = ups
    runtime, _ = runtime_for(tmp_path, (a, b, c), monkeypatch,
                             '[aliases.long]\ntargets = ["a/small", "b/small"]\ncontext_fallback = "c/big"\n'
                             '[aliases]\nslow = ["b/small", "a/small"]\nplain = ["a/small"]\n')
    a.faults += [("too_long",), ("ok",), ("too_long",)]  # for long, slow, plain in turn
    b.faults += [("hang", 3)] * 3  # past first_token = 1 s on every attempt b has
    long, slow, plain = run(runtime, ("long", chat(), Task.CHAT), ("slow", chat(), Task.CHAT),
                            ("plain", chat(), Task.CHAT))
    assert text(long) == "the long answer has more words than three" and c.requests[-1]["body"]["model"] == "big"
    assert text(slow) == "hello from a" and b.billed == 3
    assert isinstance(plain, ChainFailedError) and "maximum context length" in plain.message
    assert plain.http_status == 503


def test_images_go_as_data_urls(tmp_path: Path, ups: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import io

    from PIL import Image

    from corral.tasks import ImagePart

    a = ups[0]
    runtime, _ = runtime_for(tmp_path, (a,), monkeypatch)
    image = Image.new("RGB", (4, 3), (255, 0, 0))
    message = Message("user", "what is this?", parts=("what is this?", ImagePart(image)))
    got, = run(runtime, ("a/small", ChatRequest((message,)), Task.CHAT))
    assert text(got) == "hello from a"
    content = a.requests[-1]["body"]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "what is this?"} and content[1]["type"] == "image_url"
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (4, 3) and sent.getpixel((0, 0)) == (255, 0, 0)


def test_a_stream_that_stalls_ends_at_its_total_time(tmp_path: Path, ups: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.runtime.requestlog import latest

    a, b, c = ups
    runtime, _ = runtime_for(tmp_path, (a, b, c), monkeypatch, '[aliases]\nfast = ["c/small", "b/small"]\n',
                             total=1.5)
    c.faults.append(("stall", 4))  # three words, then silence, no [DONE]
    broken, = run(runtime, ("fast", chat(), Task.CHAT))
    assert isinstance(broken, StreamBrokenError) and "longer than its total time of 1.5 s" in broken.message
    assert b.billed == 0
    row = latest(runtime.log.path, 1)[0]
    assert row["model"] == "fast" and row["target"] == "c/small" and row["status"] == 504
    assert row["total_ms"] >= 1400 and row["ttft_ms"] is not None and row["ttft_ms"] < row["total_ms"]
