"""The transformers engine on real weights (SmolLM2-135M-Instruct, converted from the packaged GGUF):
continuous batching gives each request what it gets alone, and JSON mode yields JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.real_models import smollm2_transformers

from corral.engines.base import Handler, LoadOptions, handler_class
from corral.models.inspect import inspect_path
from corral.tasks import ChatRequest, Message, Sampling

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smollm2_transformers(tmp_path_factory.mktemp("real") / "smollm2-hf")


def load(path: Path, parallel: int) -> Handler:
    options = LoadOptions(device="cpu", parallel=parallel, threads=2)
    handler = handler_class("transformers")(path, inspect_path(path), options)
    handler.load()
    return handler


@pytest.fixture(scope="module")
def pair(folder: Path) -> Iterator[tuple[Handler, Handler]]:
    solo, batched = load(folder, 1), load(folder, 8)
    yield solo, batched
    solo.unload()
    batched.unload()


def ask(handler: Handler, request: ChatRequest) -> str:
    return "".join(c.text for c in handler.chat(request))


def test_eight_concurrent_chats_equal_their_solo_answers(pair: tuple[Handler, Handler]) -> None:
    solo, batched = pair
    requests = [ChatRequest((Message("user", f"Say something about the number {i}."),),
                            sampling=Sampling(max_tokens=24, temperature=0.0 if i % 2 == 0 else 0.8, seed=i))
                for i in range(8)]
    alone = [ask(solo, r) for r in requests]
    together = [""] * len(requests)

    def worker(i: int) -> None:
        together[i] = ask(batched, requests[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(a) > 20 for a in alone)  # real sentences, not an immediate end of sequence
    assert together == alone
    assert batched.batcher.sampling.widest >= 4  # type: ignore[attr-defined]


def test_json_object_mode_answers_with_an_object(pair: tuple[Handler, Handler]) -> None:
    _, batched = pair
    request = ChatRequest((Message("user", "Describe a cat as JSON with its name and age."),),
                          sampling=Sampling(max_tokens=120, temperature=0.0), json_schema={"type": "object"})
    chunks = list(batched.chat(request))
    value = json.loads("".join(c.text for c in chunks))
    assert isinstance(value, dict) and value
    assert chunks[-1].finish_reason == "stop"
