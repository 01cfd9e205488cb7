"""EmbedBatcher on the real MiniLM handler: requests that arrive one after another while the model is
idle are gathered into one forward pass, and each gets the vector it gets alone."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from corral.engines.base import Handler, LoadOptions, handler_class
from corral.models.inspect import inspect_path
from corral.runtime.scheduler import EmbedBatcher
from corral.tasks import EmbedRequest, EmbedResult, Usage


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> Handler:
    handler = handler_class("sentence_transformers")(minilm_path, inspect_path(minilm_path), LoadOptions(device="cpu"))
    handler.load()
    return handler


def test_staggered_arrivals_share_one_forward_pass(minilm: Handler) -> None:
    sizes: list[int] = []
    texts = [f"sentence number {i} about topic {i % 5}" for i in range(16)]

    async def scenario() -> list[np.ndarray]:
        batcher = EmbedBatcher(minilm, on_batch=sizes.append)

        async def client(i: int) -> np.ndarray:
            await asyncio.sleep(i * 0.0001)  # arrivals spread like requests parsed one by one
            result = await batcher.embed(EmbedRequest((texts[i],)))
            return np.asarray(result.vectors[0])

        return list(await asyncio.gather(*(client(i) for i in range(len(texts)))))

    vectors = asyncio.run(scenario())
    assert sizes == [16]  # one forward pass for all (without gathering: [1, 15], the first ran alone)
    alone = minilm.embed(EmbedRequest(tuple(texts)))
    assert np.allclose(np.stack(vectors), np.asarray(alone.vectors), atol=1e-5)



class CountingEngine:
    """An embed engine that records every call (its inputs) and blocks while ``hold`` is clear."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.started = threading.Semaphore(0)
        self.hold = threading.Event()
        self.hold.set()

    def embed(self, request: EmbedRequest) -> EmbedResult:
        self.calls.append(request.inputs)
        self.started.release()
        self.hold.wait(30)
        return EmbedResult([np.full(3, float(len(t))) for t in request.inputs], Usage(len(request.inputs)))


class RecordingSleep:
    """Stands in for asyncio.sleep in the batcher's burst wait: records each wait, waits no time."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def test_a_lone_request_after_a_lone_request_skips_the_burst_wait() -> None:
    engine, sleep = CountingEngine(), RecordingSleep()

    async def scenario() -> list[int]:
        batcher = EmbedBatcher(cast(Handler, engine), sleep=sleep)
        first = await batcher.embed(EmbedRequest(("a",)))
        waits_after_first = len(sleep.waits)
        for text in ("bb", "ccc", "dddd"):
            result = await batcher.embed(EmbedRequest((text,)))
            assert float(result.vectors[0][0]) == len(text)  # each gets its own answer
        assert float(first.vectors[0][0]) == 1.0
        return [waits_after_first, len(sleep.waits)]

    first_waits, all_waits = asyncio.run(scenario())
    assert first_waits == 1  # a new batcher waits one gap for a burst: none came
    assert all_waits == 1  # after a batch of one, lone requests do not wait at all
    assert engine.calls == [("a",), ("bb",), ("ccc",), ("dddd",)]  # one engine call each


def test_a_burst_after_lone_requests_is_batched_and_the_next_burst_waits() -> None:
    engine, sleep = CountingEngine(), RecordingSleep()

    async def scenario() -> None:
        batcher = EmbedBatcher(cast(Handler, engine), sleep=sleep)
        await batcher.embed(EmbedRequest(("warm",)))  # lone: from now on a lone request does not wait
        engine.started.acquire()  # the warm-up call's start
        engine.hold.clear()
        first = asyncio.ensure_future(batcher.embed(EmbedRequest(("x",))))
        await asyncio.to_thread(engine.started.acquire)  # x runs alone, in the engine, held there
        rest = [asyncio.ensure_future(batcher.embed(EmbedRequest((f"r{i}",)))) for i in range(15)]
        while batcher.pending < 15:
            await asyncio.sleep(0)
        waits_before = len(sleep.waits)
        engine.hold.set()
        await asyncio.gather(first, *rest)
        assert len(sleep.waits) > waits_before  # 15 queued: a burst, gathered with the wait
        waits_before = len(sleep.waits)
        await batcher.embed(EmbedRequest(("after",)))  # after a burst a lone request waits a gap again
        assert len(sleep.waits) > waits_before

    asyncio.run(scenario())
    assert [len(c) for c in engine.calls] == [1, 1, 15, 1]
