"""The runtime object with the fake engine (tests/fake_engine.py), in-process and fast: the engine
table is injected, generation and embedding round trips, the request log, single-flight loads,
LRU eviction under a memory budget and a count limit, refusals before any load, unload,
keep-alive on an injected clock, and cancellation reaching the engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.fake_engine import FAKE_ENGINES, FakeHandler, MiB, fake_vector, loaded_fake, register_fake

from corral.config import load_settings
from corral.engines.base import LoadOptions
from corral.engines.table import EngineSpec
from corral.errors import BusyError, InsufficientMemoryError, UnsupportedTaskError
from corral.models.store import Store
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.requestlog import latest
from corral.runtime.runtime import Runtime, RuntimeOptions, build_runtime
from corral.tasks import ChatRequest, CompletionRequest, EmbedRequest, Message, Sampling, Task, TextChunk, Usage
from corral.wire import acollect

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")
BIG = 40 * MiB  # above glibc's largest mmap threshold: loading maps it, unloading gives it back
CLI = CallInfo(Door.CLI, "run")


def run(scenario: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(scenario)


def store() -> Store:
    return Store(load_settings().manifest_path)  # CORRAL_HOME is the test's own folder


def fake_runtime(clock: Callable[[], float] = time.monotonic, engines: dict[str, EngineSpec] | None = None,
                 **options: Any) -> Runtime:
    settings = load_settings()
    opts = RuntimeOptions(**{"load": LoadOptions(device="cpu"), "budget_bytes": 2**40, **options})
    return build_runtime(settings, Store(settings.manifest_path), opts, clock=clock,
                         engines=FAKE_ENGINES if engines is None else engines)


def chat(text: str, **sampling: Any) -> ChatRequest:
    return ChatRequest((Message("system", "be brief"), Message("user", text)), sampling=Sampling(**sampling))


def loaded(rt: Runtime) -> list[str]:
    return [m.name for m in rt.status().models]


def test_the_injected_table_runs_the_fake_engine_and_the_default_table_refuses_it(tmp_path: Path) -> None:
    register_fake(store(), tmp_path, "echo")

    async def scenario() -> tuple[list[TextChunk], str, bool]:
        async with fake_runtime() as rt:
            chunks = [c async for c in rt.run(Task.CHAT, "echo", chat("one two three"), CLI)]
            status = rt.status().models[0]
            return chunks, f"{status.engine}/{status.format}", isinstance(rt.registry.models["echo"].handler,
                                                                          FakeHandler)

    chunks, engine, fake = run(scenario())
    assert fake and engine == "fake/fake"
    assert [c.text for c in chunks] == ["one", " two", " three", ""]
    assert (chunks[-1].finish_reason, chunks[-1].usage) == ("stop", Usage(prompt_tokens=5, completion_tokens=3))

    async def default_table() -> list[str]:
        async with fake_runtime(engines={}) as rt:  # no fake row: the entry's engine is unknown
            with pytest.raises(UnsupportedTaskError, match="echo cannot chat; it is a chat, complete model"):
                await anext(rt.run(Task.CHAT, "echo", chat("hi"), CLI))
            return loaded(rt)

    assert run(default_table()) == []


def test_max_tokens_stop_and_completion_and_the_log(tmp_path: Path, corral_home: Path) -> None:
    register_fake(store(), tmp_path, "echo")
    words = "alpha beta gamma delta epsilon"

    async def scenario() -> list[Any]:
        async with fake_runtime() as rt:
            capped = await acollect(rt.run(Task.CHAT, "echo", chat(words, max_tokens=2), CLI))
            stopped = await acollect(rt.run(Task.CHAT, "echo", chat(words, stop=("delta",)), CLI))
            done = await acollect(rt.run(Task.COMPLETE, "echo", CompletionRequest(words), CallInfo(Door.HF, "gen")))
            return [capped, stopped, done]

    capped, stopped, done = run(scenario())
    assert (capped.text, capped.finish_reason, capped.usage.completion_tokens) == ("alpha beta", "length", 2)
    assert (stopped.text, stopped.finish_reason) == ("alpha beta gamma ", "stop")
    assert (done.text, done.finish_reason, done.usage) == (words, "stop", Usage(5, 5))
    rows = latest(corral_home / "requests.db", 3)  # newest first; the log was flushed on exit
    assert [(r["door"], r["task"], r["route"], r["model"], r["status"]) for r in rows] == [
        ("hf", "complete", "gen", "echo", 200), ("cli", "chat", "run", "echo", 200),
        ("cli", "chat", "run", "echo", 200)]
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (5, 5)


def test_embed_is_deterministic_and_logged(tmp_path: Path, corral_home: Path) -> None:
    register_fake(store(), tmp_path, "vec", tasks=("embed",), dim=16)

    async def scenario() -> list[Any]:
        async with fake_runtime() as rt:
            one = await rt.call(Task.EMBED, "vec", EmbedRequest(("a b", "c")), CallInfo(Door.SIDECAR, "embed"))
            together = await asyncio.gather(*(rt.call(Task.EMBED, "vec", EmbedRequest((t,)), CLI)
                                              for t in ("x", "y z", "w")))
            return [one, together, sum(loaded_fake(rt, "vec").embed_calls)]

    one, together, texts = run(scenario())
    assert [list(v) for v in one.vectors] == [fake_vector("a b", 16), fake_vector("c", 16)]
    assert (one.usage.prompt_tokens, one.input_tokens) == (3, [2, 1])
    assert [list(r.vectors[0]) for r in together] == [fake_vector(t, 16) for t in ("x", "y z", "w")]
    assert [r.usage.prompt_tokens for r in together] == [1, 2, 1] and texts == 5
    row = latest(corral_home / "requests.db", 4)[-1]
    assert (row["door"], row["task"], row["model"], row["prompt_tokens"]) == ("sidecar", "embed", "vec", 3)


def test_concurrent_first_requests_load_once(tmp_path: Path) -> None:
    register_fake(store(), tmp_path, "echo")

    async def scenario() -> tuple[list[str], float | None, int]:
        async with fake_runtime() as rt:
            answers = await asyncio.gather(*(acollect(rt.run(Task.CHAT, "echo", chat(f"hi {i}"), CLI))
                                             for i in range(6)))
            loads = rt.metrics.registry.get_sample_value("corral_model_loads_total", {"model": "echo"})
            return [a.text for a in answers], loads, len(loaded_fake(rt, "echo").generations)

    texts, loads, generations = run(scenario())
    assert texts == [f"hi {i}" for i in range(6)] and loads == 1.0 and generations == 6


def test_a_budget_for_two_evicts_the_least_recently_used(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        register_fake(store(), tmp_path, name, memory_bytes=BIG)

    async def use(rt: Runtime, name: str) -> None:
        await acollect(rt.run(Task.CHAT, name, chat("x"), CLI))

    async def scenario() -> list[Any]:
        async with fake_runtime(budget_bytes=BIG * 5 // 2) as rt:
            await use(rt, "a")
            await use(rt, "b")
            first_a = loaded_fake(rt, "a")
            await use(rt, "a")  # a is now the most recently used
            await use(rt, "c")  # room for c: b goes, not a
            status = rt.status()
            return [loaded(rt), first_a is loaded_fake(rt, "a"), status.resident_bytes,
                    [m.measured_bytes for m in status.models]]

    names, same_a, resident, measured = run(scenario())
    assert names == ["a", "c"] and same_a  # a was never reloaded
    assert all(BIG * 0.9 <= m <= BIG * 1.25 for m in measured), measured  # the registry measured the real load
    assert resident == sum(measured)


def test_a_budget_for_one_evicts_the_first_and_status_shows_it(tmp_path: Path) -> None:
    register_fake(store(), tmp_path, "a", memory_bytes=BIG)
    register_fake(store(), tmp_path, "b", memory_bytes=BIG)

    async def scenario() -> list[Any]:
        async with fake_runtime(budget_bytes=BIG * 3 // 2) as rt:
            await acollect(rt.run(Task.CHAT, "a", chat("x"), CLI))
            first = loaded_fake(rt, "a")
            before = loaded(rt)
            await acollect(rt.run(Task.CHAT, "b", chat("x"), CLI))
            return [before, loaded(rt), first.unloaded, first.weights, rt.status().budget_bytes]

    before, after, unloaded, weights, budget = run(scenario())
    assert (before, after, unloaded, weights, budget) == (["a"], ["b"], True, b"", BIG * 3 // 2)


def test_max_loaded_evicts_by_count(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        register_fake(store(), tmp_path, name)

    async def scenario() -> list[list[str]]:
        seen = []
        async with fake_runtime(max_loaded=2) as rt:
            for name in ("a", "b", "c"):
                await acollect(rt.run(Task.COMPLETE, name, CompletionRequest("x"), CLI))
                seen.append(loaded(rt))
        return seen

    assert run(scenario()) == [["a"], ["a", "b"], ["b", "c"]]


def test_a_model_over_the_budget_is_refused_and_nothing_is_evicted(tmp_path: Path) -> None:
    register_fake(store(), tmp_path, "small")
    register_fake(store(), tmp_path, "huge", memory_bytes=BIG)

    async def scenario() -> list[str]:
        async with fake_runtime(budget_bytes=BIG // 2) as rt:
            await rt.load("small")
            with pytest.raises(InsufficientMemoryError, match="huge needs about 42 MB but the memory budget is 21 MB"):
                await anext(rt.run(Task.CHAT, "huge", chat("x"), CLI))
            return loaded(rt)

    assert run(scenario()) == ["small"]


def test_a_task_the_model_does_not_serve_is_refused_before_any_load_or_eviction(tmp_path: Path,
                                                                                 corral_home: Path) -> None:
    register_fake(store(), tmp_path, "talker")
    register_fake(store(), tmp_path, "vec", tasks=("embed",))
    register_fake(store(), tmp_path, "vision", tasks=("classify_image",))

    async def scenario() -> list[str]:
        async with fake_runtime(max_loaded=1) as rt:
            await rt.load("vec")
            with pytest.raises(UnsupportedTaskError, match="talker cannot embed; it serves: chat, complete"):
                await rt.call(Task.EMBED, "talker", EmbedRequest(("x",)), CLI)
            with pytest.raises(UnsupportedTaskError, match="vision cannot chat; it is a classify_image model"):
                await anext(rt.run(Task.CHAT, "vision", chat("x"), CLI))
            return loaded(rt)

    assert run(scenario()) == ["vec"]  # still loaded: nothing was evicted for the refused models
    rows = latest(corral_home / "requests.db", 2)
    assert [(r["task"], r["model"], r["status"]) for r in rows] == [("chat", "vision", 400), ("embed", "talker", 400)]


def test_unload_frees_the_model_and_refuses_while_busy(tmp_path: Path) -> None:
    register_fake(store(), tmp_path, "echo", hold=True)

    async def scenario() -> list[Any]:
        async with fake_runtime() as rt:
            await rt.load("echo")
            handler = loaded_fake(rt, "echo")
            stream = rt.run(Task.CHAT, "echo", chat("one two three"), CLI)
            first = await anext(stream)  # the second token waits for release: the request is in flight
            with pytest.raises(BusyError, match="echo is serving 1 request") as busy:
                await rt.unload("echo")
            handler.release.set()
            rest = await acollect(stream)
            gone = [await rt.unload("echo"), loaded(rt), handler.unloaded, await rt.unload("echo")]
            return [first.text + rest.text, busy.value.http_status, *gone]

    assert run(scenario()) == ["one two three", 409, True, [], True, False]


def test_keep_alive_follows_the_injected_clock(tmp_path: Path) -> None:
    register_fake(store(), tmp_path, "echo")
    now = [1000.0]

    async def scenario() -> list[Any]:
        seen: list[Any] = []
        async with fake_runtime(clock=lambda: now[0], keep_alive=60.0, reap_interval=3600.0) as rt:
            await acollect(rt.run(Task.CHAT, "echo", chat("x"), CLI))
            now[0] += 59.0
            seen.append(await rt.registry.reap_idle())  # idle 59 s of 60: kept
            seen.append(rt.status().models[0].expires_in_seconds)
            now[0] += 1.0
            seen.append(await rt.registry.reap_idle())  # idle 60 s: unloaded
            seen.append(loaded(rt))
        return seen

    assert run(scenario()) == [[], 1.0, ["echo"], []]


def test_closing_a_stream_stops_the_engine_before_the_slot_is_free(tmp_path: Path, corral_home: Path) -> None:
    register_fake(store(), tmp_path, "echo", repeat=True, delay=0.001, context=20_000)  # 10 s to reach max_tokens

    async def scenario() -> list[Any]:
        async with fake_runtime() as rt:
            stream = rt.run(Task.CHAT, "echo", chat("la", max_tokens=10_000), CLI)
            first = await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]
            generation = loaded_fake(rt, "echo").generations[0]  # already closed: no second call can overlap
            return [first.text, generation.closed, generation.ended, generation.produced < 10_000,
                    rt.status().models[0].in_flight]

    assert run(scenario()) == ["la", True, False, True, 0]
    row = latest(corral_home / "requests.db", 1)[0]
    assert (row["status"], row["error"], row["task"]) == (499, "client closed the connection", "chat")
