"""Continuous batching on the transformers engine: concurrent requests decode together and each
gets exactly what it gets alone (greedy and seeded sampling, text, usage and logprobs)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.tiny_models import build_causal_lm

from corral.engines.base import Handler, LoadOptions, handler_class
from corral.engines.transformers.continuous import start_batcher
from corral.models.inspect import inspect_path
from corral.tasks import ChatRequest, CompletionRequest, Message, Sampling, TextChunk

PROMPTS = ["hello world", "the cat sat on", "one two three four five six", "a", "numbers: 1 2 3",
           "why is the sky", "x y z", "tell me a story about a cat and a dog"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_causal_lm("qwen2", tmp_path_factory.mktemp("qwen2")).path


def load(path: Path, parallel: int) -> Handler:
    handler = handler_class("transformers")(path, inspect_path(path), LoadOptions(device="cpu", parallel=parallel))
    handler.load()
    return handler


@pytest.fixture(scope="module")
def solo(model_path: Path) -> Iterator[Handler]:
    handler = load(model_path, 1)
    yield handler
    handler.unload()


@pytest.fixture(scope="module")
def batched(model_path: Path) -> Iterator[Handler]:
    handler = load(model_path, 8)
    yield handler
    handler.unload()


def outcome(chunks: Iterator[TextChunk]) -> tuple[str, object, object, list[tuple[str, float]]]:
    items = list(chunks)
    logprobs = [(lp.token, round(lp.logprob, 4)) for c in items for lp in c.logprobs]
    return "".join(c.text for c in items), items[-1].finish_reason, items[-1].usage, logprobs


def requests() -> list[CompletionRequest | ChatRequest]:
    out: list[CompletionRequest | ChatRequest] = []
    for i, prompt in enumerate(PROMPTS):
        sampling = (Sampling(max_tokens=6 + 3 * i, temperature=0.0) if i % 2 == 0
                    else Sampling(max_tokens=20, temperature=0.9, top_p=0.9, seed=100 + i))
        if i % 3 == 0:
            out.append(ChatRequest((Message("user", prompt),), sampling=sampling, logprobs=2))
        else:
            out.append(CompletionRequest(prompt, sampling=sampling, logprobs=2 if i % 4 == 1 else None))
    return out


def run(handler: Handler, request: CompletionRequest | ChatRequest) -> Iterator[TextChunk]:
    return handler.chat(request) if isinstance(request, ChatRequest) else handler.complete(request)


def test_concurrent_requests_equal_their_solo_results(solo: Handler, batched: Handler) -> None:
    reqs = requests()
    alone = [outcome(run(solo, r)) for r in reqs]
    together: list[object] = [None] * len(reqs)
    start = threading.Barrier(len(reqs))

    def worker(i: int) -> None:
        start.wait()
        together[i] = outcome(run(batched, reqs[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    assert batched.batcher.sampling.widest >= 4  # type: ignore[attr-defined]  (they really shared passes)


def test_a_cancelled_request_does_not_disturb_its_neighbours(batched: Handler, solo: Handler) -> None:
    keep = CompletionRequest("one two three four five six", sampling=Sampling(max_tokens=24, temperature=0.0))
    expected = outcome(solo.complete(keep))
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(outcome(batched.complete(keep))))
    dropped = batched.complete(CompletionRequest("hello", sampling=Sampling(max_tokens=400, temperature=0.0)))
    next(dropped)
    worker.start()
    dropped.close()
    worker.join()
    assert result == [expected]
    assert not batched.batcher.queues  # type: ignore[attr-defined]  (every request's inbox is gone)


def test_a_model_that_cannot_batch_falls_back_to_one_at_a_time(model_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path))
    before = model.config._attn_implementation
    assert start_batcher(model, [0], sequences=4, context=0) is None  # a cache with no room cannot start
    assert model.config._attn_implementation == before  # and the model is left as it was


def test_a_request_must_fit_the_shared_cache(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cache smaller than the model's context, a prompt that fits the context but not the
    cache is a clear context-length error, not a request that waits forever for cache pages."""
    import corral.engines.transformers.continuous as cb
    from corral.errors import ContextLengthError

    monkeypatch.setattr(cb, "TOKENS_PER_SEQUENCE", cb.PAGE_SIZE)  # 2 sequences x 64 tokens
    handler = load(model_path, 2)
    try:
        assert handler.batcher.capacity == 2 * cb.PAGE_SIZE < handler.context_length  # type: ignore[attr-defined]
        long_prompt = " ".join(["hello world"] * 100)
        with pytest.raises(ContextLengthError, match=str(handler.batcher.capacity)):  # type: ignore[attr-defined]
            handler.complete(CompletionRequest(long_prompt, sampling=Sampling(max_tokens=4, temperature=0.0)))
        text = "".join(c.text for c in handler.complete(CompletionRequest("hello", sampling=Sampling(max_tokens=4))))
        assert isinstance(text, str)
    finally:
        handler.unload()


def test_the_installed_transformers_batches_through_the_public_surface(model_path: Path) -> None:
    """Pins the supported versions: with the transformers the constraints file installs, batching
    really starts (a release that changes the surface makes this fail, not silently fall back), and
    every thread it starts is a daemon, so a process that never unloads can still exit."""
    from transformers import AutoModelForCausalLM

    from corral.engines.transformers.continuous import unsupported_reason

    model = AutoModelForCausalLM.from_pretrained(str(model_path))
    attention = model.config._attn_implementation
    assert unsupported_reason(model) is None
    before = set(threading.enumerate())
    batcher = start_batcher(model, [0], sequences=2, context=128)
    assert batcher is not None and batcher.alive()
    try:
        started = [t for t in threading.enumerate() if t not in before]
        assert started and all(t.daemon for t in started)
    finally:
        batcher.close()
    assert not batcher.alive()
    assert model.config._attn_implementation == attention


@pytest.mark.slow
def test_a_process_that_never_unloads_still_exits(model_path: Path) -> None:
    script = (
        "from pathlib import Path\n"
        "from corral.engines.base import LoadOptions, handler_class\n"
        "from corral.models.inspect import inspect_path\n"
        "from corral.tasks import CompletionRequest, Sampling\n"
        f"path = Path({str(model_path)!r})\n"
        "h = handler_class('transformers')(path, inspect_path(path), LoadOptions(device='cpu', parallel=2))\n"
        "h.load()\n"
        "assert h.batcher is not None\n"
        "request = CompletionRequest('hello', sampling=Sampling(max_tokens=3))\n"
        "print(''.join(c.text for c in h.complete(request)) is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_a_dead_batching_thread_fails_its_requests_and_the_next_request_restarts_it(
        model_path: Path, solo: Handler, monkeypatch: pytest.MonkeyPatch) -> None:
    import corral.engines.transformers.continuous as cb

    sampled = CompletionRequest("the cat sat on", sampling=Sampling(max_tokens=12, temperature=0.9, seed=7))
    expected = outcome(solo.complete(sampled))
    handler = load(model_path, 4)
    try:
        first = handler.batcher  # type: ignore[attr-defined]

        def explode(scores: object, sampler: object) -> None:
            raise RuntimeError("injected fault in the generation thread")

        with monkeypatch.context() as patch:
            patch.setattr(cb, "steer", explode)
            with pytest.raises(cb.BatchFailed, match="injected fault") as failure:
                outcome(handler.complete(sampled))
        assert failure.value.http_status == 503 and failure.value.hint
        assert not first.alive()
        assert outcome(handler.complete(sampled)) == expected  # a new batcher took over
        assert handler.batcher is not first and handler.batcher.alive()  # type: ignore[attr-defined]
    finally:
        handler.unload()
