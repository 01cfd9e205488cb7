"""The runtime object on its own, with no transport: `async with` preloads and cleans up, a call
is logged with its door and task, and a task the model cannot serve is refused before anything is
loaded or evicted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.config import load_settings
from corral.engines.base import LoadOptions
from corral.errors import UnsupportedTaskError
from corral.models.store import Store
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.requestlog import latest
from corral.runtime.runtime import Runtime, RuntimeOptions, build_runtime
from corral.tasks import ChatRequest, EmbedRequest, EmbedResult, Message, Sampling, Task


def runtime(clock: Callable[[], float] = time.monotonic, **options: object) -> Runtime:
    settings = load_settings()  # CORRAL_HOME is the test's own folder
    opts = RuntimeOptions(load=LoadOptions(device="cpu"), budget_bytes=2**40, **options)  # type: ignore[arg-type]
    return build_runtime(settings, Store(settings.manifest_path), opts, clock=clock)


def test_async_with_preloads_serves_logs_and_unloads(corral_home: Path) -> None:
    rt = runtime(preload=("minilm",))

    async def scenario() -> tuple[list[str], EmbedResult, list[str]]:
        async with rt:
            loaded = [m.name for m in rt.status().models]
            result = await rt.call(Task.EMBED, "minilm", EmbedRequest(("hello", "world")),
                                   CallInfo(Door.SIDECAR, "embed"))
        return loaded, result, [m.name for m in rt.status().models]

    loaded, result, after = asyncio.run(scenario())
    assert loaded == ["minilm"] and len(result.vectors) == 2 and len(result.vectors[0]) == 384
    assert after == []  # leaving the block unloaded every model
    row = latest(corral_home / "requests.db", 1)[0]  # and flushed the log
    assert (row["door"], row["task"], row["model"], row["status"]) == ("sidecar", "embed", "minilm", 200)


def test_a_task_the_model_cannot_serve_is_refused_before_any_load_or_eviction(corral_home: Path) -> None:
    rt = runtime(max_loaded=1, preload=("smollm2",))
    chat = ChatRequest((Message("user", "hi"),), sampling=Sampling(max_tokens=2))

    async def scenario() -> list[str]:
        async with rt:
            with pytest.raises(UnsupportedTaskError, match="minilm cannot chat; it serves: embed"):
                await anext(rt.run(Task.CHAT, "minilm", chat, CallInfo(Door.CLI, "run")))
            return [m.name for m in rt.status().models]

    assert asyncio.run(scenario()) == ["smollm2"]  # still loaded: nothing was evicted for minilm
    row = latest(corral_home / "requests.db", 1)[0]
    assert (row["door"], row["task"], row["status"]) == ("cli", "chat", 400)


def test_a_request_of_the_wrong_type_is_a_programming_error(corral_home: Path) -> None:
    rt = runtime()
    with pytest.raises(TypeError, match="chat takes a ChatRequest, not EmbedRequest"):
        rt.run(Task.CHAT, "smollm2", EmbedRequest(("x",)), CallInfo(Door.CLI, "run"))


def test_keep_alive_follows_the_injected_clock(corral_home: Path) -> None:
    now = [1000.0]
    rt = runtime(clock=lambda: now[0], keep_alive=60.0, reap_interval=3600.0)

    async def scenario() -> list[list[str]]:
        seen = []
        async with rt:
            await rt.call(Task.EMBED, "minilm", EmbedRequest(("x",)), CallInfo(Door.CLI, "embed"))
            now[0] += 59.0
            seen.append(await rt.registry.reap_idle())  # idle 59 s of 60: kept
            assert rt.status().models[0].expires_in_seconds == 1.0
            now[0] += 1.0
            seen.append(await rt.registry.reap_idle())  # idle 60 s: unloaded
            seen.append([m.name for m in rt.status().models])
        return seen

    assert asyncio.run(scenario()) == [[], ["minilm"], []]


def test_build_runtime_from_settings_alone(tmp_path: Path) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text('[runtime]\nmax_loaded = 2\nkeep_alive = "90s"\nmax_queue = 5\nparallel = 3\n', encoding="utf-8")
    runtime = build_runtime(load_settings(config))
    status = runtime.status()
    assert (status.max_loaded, runtime.registry.keep_alive, runtime.options.max_queue) == (2, 90.0, 5)
    assert runtime.options.load.parallel == 3 and status.models == ()
