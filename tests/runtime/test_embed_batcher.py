"""EmbedBatcher on the real MiniLM handler: requests that arrive one after another while the model is
idle are gathered into one forward pass, and each gets the vector it gets alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from corral.engines.base import Handler, LoadOptions, handler_class
from corral.models.inspect import inspect_path
from corral.runtime.scheduler import EmbedBatcher
from corral.tasks import EmbedRequest


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

