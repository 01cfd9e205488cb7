"""The catalogue's row 15 (issue 18): a model whose load runs out of memory, with the fake engine
(tests/fake_engine.py, ``fail_load``) behind the HTTP door in-process and behind the CLI's runtime.

The fake's load first allocates its whole memory estimate, then fails the way a real one does: a
MemoryError raised, a real allocation the allocator refuses (1 PiB), or torch's OutOfMemoryError (a
RuntimeError, what a CUDA load raises). Every time the caller gets a 507 whose message gives the
memory the model needs (its estimate) and the memory free now, never a 500; nothing is left behind
(the model is listed not loaded, no room stays reserved, no measurement is recorded, the memory the
failed load had taken is given back); the model loaded before keeps serving; and a loadable model,
the same one fixed included, loads afterwards in the room the failed load had asked for."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.server.test_fake_http import fake_runtime, register, run, serving

from corral.config import load_settings
from corral.errors import InsufficientMemoryError
from corral.models.store import Store
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.memory import human
from corral.runtime.requestlog import latest
from corral.runtime.sync import SyncRuntime
from corral.tasks import ChatRequest, Message, Sampling, Task, TextChunk

pytestmark = pytest.mark.timeout(120)
CHAT = "/v1/chat/completions"
MiB = 1 << 20
BIG = 96 * MiB  # the failing model's estimate, which its load really allocates before it fails
FREE = re.compile(r"and (\d+(?:\.\d+)?) (MB|GB) is free in RAM")


def chat(model: str, content: str = "still here") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def says_needed_and_free(message: str, name: str) -> None:
    assert message.startswith(f"{name} ran out of memory while loading"), message
    assert f"it needs about {human(BIG)}" in message, message
    free = FREE.search(message)
    assert free is not None and float(free.group(1)) > 0, message


@pytest.mark.parametrize("how", ["raise", "allocate", "cuda"])
def test_a_load_out_of_memory_is_507_with_needed_and_free_and_leaves_nothing(
        tmp_path: Path, corral_home: Path, how: str) -> None:
    register(tmp_path, "echo")
    register(tmp_path, "big", memory_bytes=BIG, fail_load=how)
    if how == "cuda":
        import torch  # noqa: F401  (imported by the fake's load otherwise: its RSS is not the failed load's)

    async def scenario() -> dict[str, Any]:
        rt = fake_runtime()
        async with serving(rt) as (_, http):
            first = await http.post(CHAT, json=chat("echo", "loaded before"))
            before = rss()
            failed = await asyncio.gather(http.post(CHAT, json=chat("big")), http.post(CHAT, json=chat("big")))
            after = rss()
            return {"first": first, "failed": failed, "grown": after - before,
                    "retried": await http.post(CHAT, json=chat("big")),
                    "ollama": await http.post("/api/chat", json={**chat("big"), "stream": False}),
                    "still": await http.post(CHAT, json=chat("echo")),
                    "ps": (await http.get("/api/ps")).json(), "models": (await http.get("/api/models")).json(),
                    "resident": rt.registry.resident_bytes(), "echo_need": rt.registry.models["echo"].need_bytes,
                    "loading": [*rt.registry._loading, *rt.registry._reserved]}

    got = run(scenario())
    assert got["first"].status_code == 200
    for answer in [*got["failed"], got["retried"]]:  # both waiters of the one load, then a fresh try
        assert answer.status_code == 507, answer.text
        error = answer.json()["error"]
        assert error["type"] == "insufficient_storage" and error["code"] == "InsufficientMemoryError"
        says_needed_and_free(error["message"], "big")
    assert got["ollama"].status_code == 507 and "it needs about" in got["ollama"].json()["error"]  # Ollama's shape
    assert got["still"].status_code == 200 and got["still"].json()["choices"][0]["message"]["content"] == "still here"
    assert [m["name"] for m in got["ps"]["models"]] == ["echo"]
    states = {m["name"]: m.get("state") for m in got["models"]["models"] if m["name"] in ("echo", "big")}
    assert states == {"echo": "loaded", "big": "not loaded"}
    assert got["resident"] == got["echo_need"] and got["loading"] == []  # no room left reserved for big
    assert got["grown"] < BIG // 2  # what the failed load had allocated was given back
    assert "big" not in Store(load_settings().manifest_path).measurements()  # no bogus figure for later fits
    rows = [(r["model"], r["status"]) for r in reversed(latest(corral_home / "requests.db", 10))]
    assert rows == [("echo", 200), ("big", 507), ("big", 507), ("big", 507), ("big", 507), ("echo", 200)]


def test_the_room_a_failed_load_asked_for_is_free_for_the_next_load(tmp_path: Path) -> None:
    register(tmp_path, "echo")
    register(tmp_path, "big", memory_bytes=BIG, fail_load="raise")
    register(tmp_path, "other", memory_bytes=BIG)  # loadable, as large as big

    async def scenario() -> list[Any]:
        rt = fake_runtime(budget_bytes=BIG + 16 * MiB)  # echo and one model of big's size fit; two would not
        async with serving(rt) as (_, http):
            out: list[Any] = [await http.post(CHAT, json=chat("echo")), await http.post(CHAT, json=chat("big"))]
            out.append(await http.post(CHAT, json=chat("other")))  # fits only if big's reservation was given back
            out.append(sorted(rt.registry.models))
            await http.post("/api/models/other/unload")
            register(tmp_path, "big", memory_bytes=BIG)  # the same model, now loadable: a retry loads it
            out += [await http.post(CHAT, json=chat("big")), sorted(rt.registry.models)]
            return out

    echo, failed, other, loaded, fixed, after = run(scenario())
    assert echo.status_code == 200 and failed.status_code == 507
    assert other.status_code == 200 and loaded == ["echo", "other"]  # echo was not evicted to make room
    assert fixed.status_code == 200 and after == ["big", "echo"]


def test_the_clis_runtime_raises_the_same_error(tmp_path: Path) -> None:
    register(tmp_path, "echo")
    register(tmp_path, "big", memory_bytes=BIG, fail_load="allocate")
    call = CallInfo(Door.CLI, "run")
    request = ChatRequest((Message("user", "one two"),), sampling=Sampling(max_tokens=4))
    with SyncRuntime(fake_runtime()) as cli:
        assert "".join(c.text for c in cli.stream(Task.CHAT, "echo", request, call)
                       if isinstance(c, TextChunk)) == "one two"
        with pytest.raises(InsufficientMemoryError) as caught:
            list(cli.stream(Task.CHAT, "big", request, call))
        loaded = sorted(cli.runtime.registry.models)
        again = "".join(c.text for c in cli.stream(Task.CHAT, "echo", request, call) if isinstance(c, TextChunk))
    says_needed_and_free(caught.value.message, "big")
    assert caught.value.exit_code == 1 and caught.value.hint and "smaller" in caught.value.hint
    assert loaded == ["echo"] and again == "one two"

