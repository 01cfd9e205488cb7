"""The llama.cpp engine on the real SmolLM2-135M-Instruct GGUF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.engines.base import Handler, LoadOptions, handler_class
from corral.engines.streaming import StopMatcher
from corral.errors import ContextLengthError, UnsupportedTaskError
from corral.models.inspect import inspect_path
from corral.tasks import ChatRequest, CompletionRequest, EmbedRequest, Message, Sampling, Task, TextChunk

QUESTION = (Message("user", "List three colours."),)


@pytest.fixture(scope="module", params=[1, 4], ids=["single", "batched"])
def llama(smollm2_path: Path, request: pytest.FixtureRequest) -> Iterator[Handler]:
    """The engine both ways: one sequence (llama-cpp-python in the caller's thread) and the batched decoder."""
    options = LoadOptions(threads=2, parallel=request.param)
    handler = handler_class("llama_cpp")(smollm2_path, inspect_path(smollm2_path), options)
    handler.load()
    yield handler
    handler.unload()


def collect(chunks: Iterator[TextChunk]) -> tuple[str, TextChunk]:
    items = list(chunks)
    assert items[-1].finish_reason is not None and items[-1].usage is not None
    assert all(c.finish_reason is None for c in items[:-1])
    return "".join(c.text for c in items), items[-1]


def greedy(**kw: object) -> Sampling:
    return Sampling(**{"max_tokens": 24, "temperature": 0.0, "seed": 7, **kw})  # type: ignore[arg-type]


def test_serves_declared_tasks(llama: Handler) -> None:
    assert llama.serves() == {Task.CHAT, Task.COMPLETE, Task.EMBED}


@pytest.fixture(scope="module")
def direct(smollm2_path: Path) -> Iterator[Any]:
    """llama-cpp-python called directly, with the settings corral's decoder uses (flash attention on)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(smollm2_path), n_ctx=4096, n_threads=2, flash_attn=True, verbose=False)
    yield llm
    llm.close()


def test_chat_matches_llama_cpp_own_chat(llama: Handler, direct: Any) -> None:
    text, last = collect(llama.chat(ChatRequest(QUESTION, sampling=greedy())))
    direct = direct.create_chat_completion(
        [{"role": "user", "content": "List three colours."}], temperature=0, max_tokens=24, seed=7)
    assert text == direct["choices"][0]["message"]["content"]
    assert last.usage is not None
    assert last.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert last.usage.completion_tokens == direct["usage"]["completion_tokens"]


def test_greedy_is_deterministic_and_streams(llama: Handler) -> None:
    first = list(llama.chat(ChatRequest(QUESTION, sampling=greedy())))
    second = list(llama.chat(ChatRequest(QUESTION, sampling=greedy())))
    assert [c.text for c in first] == [c.text for c in second]
    assert len([c for c in first if c.text]) > 3  # many chunks: it really streams


def test_seeded_sampling_is_reproducible(llama: Handler) -> None:
    hot = Sampling(max_tokens=24, temperature=1.0, seed=1234)
    a, _ = collect(llama.chat(ChatRequest(QUESTION, sampling=hot)))
    b, _ = collect(llama.chat(ChatRequest(QUESTION, sampling=hot)))
    assert a == b


def test_max_tokens_gives_length(llama: Handler, direct: Any) -> None:
    text, last = collect(llama.complete(CompletionRequest("Once upon a time", sampling=greedy(max_tokens=5))))
    assert last.finish_reason == "length" and last.usage is not None
    assert last.usage.completion_tokens == 5
    answer = direct.create_completion(
        llama.tokenize("Once upon a time", add_bos=llama._add_bos), max_tokens=5, temperature=0)  # type: ignore[attr-defined]
    assert text == answer["choices"][0]["text"]


def test_stop_sequence_cuts_text_and_generation(llama: Handler) -> None:
    full, _ = collect(llama.chat(ChatRequest(QUESTION, sampling=greedy(max_tokens=40))))
    stop = full.strip()[5:8]
    assert stop and stop in full
    text, last = collect(llama.chat(ChatRequest(QUESTION, sampling=greedy(max_tokens=40, stop=(stop,)))))
    assert text == full[: full.find(stop)]
    assert last.finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens < 40


def test_closing_the_stream_stops_generation(llama: Handler) -> None:
    stream = llama.complete(CompletionRequest("Count: 1, 2, 3,", sampling=greedy(max_tokens=200)))
    first = next(stream)
    assert first.text
    stream.close()  # what a client disconnect or Ctrl-C does
    # the model is immediately usable again and answers exactly as before
    text, _ = collect(llama.complete(CompletionRequest("Count: 1, 2, 3,", sampling=greedy(max_tokens=3))))
    assert text.startswith(first.text)


def test_logprobs_and_json_schema(llama: Handler) -> None:
    import json

    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}},
              "required": ["colour"], "additionalProperties": False}
    text, last = collect(llama.chat(ChatRequest(QUESTION, sampling=greedy(max_tokens=40), json_schema=schema)))
    assert last.finish_reason == "stop" and isinstance(json.loads(text)["colour"], str)
    req = ChatRequest(QUESTION, sampling=greedy(max_tokens=6), logprobs=2)
    if llama.max_concurrency == 1:
        with pytest.raises(UnsupportedTaskError, match="--parallel"):
            list(llama.chat(req))
        return
    chunks = list(llama.chat(req))
    lps = [lp for c in chunks for lp in c.logprobs]
    assert len(lps) == chunks[-1].usage.completion_tokens  # type: ignore[union-attr]
    assert all(lp.logprob <= 0 and len(lp.top) == 2 and lp.top[0][1] == lp.logprob for lp in lps)  # greedy: top-1


def test_context_too_long_is_a_clear_error(smollm2_path: Path) -> None:
    handler = handler_class("llama_cpp")(smollm2_path, inspect_path(smollm2_path),
                                         LoadOptions(context_length=64, threads=2))
    handler.load()
    try:
        with pytest.raises(ContextLengthError, match="context holds 64"):
            list(handler.complete(CompletionRequest("word " * 200, sampling=greedy())))
    finally:
        handler.unload()


def test_embeddings_are_unit_vectors_and_batch(llama: Handler) -> None:
    result = llama.embed(EmbedRequest(("The cat sat.", "A cat was sitting.", "Stock prices fell.")))
    assert len(result.vectors) == 3
    norms = [sum(x * x for x in v) ** 0.5 for v in result.vectors]
    assert all(abs(n - 1) < 1e-4 for n in norms)
    single = llama.embed(EmbedRequest(("The cat sat.",))).vectors[0]
    assert max(abs(a - b) for a, b in zip(single, result.vectors[0], strict=True)) < 1e-4
    assert result.usage.prompt_tokens > 0


@pytest.mark.parametrize(("stops", "pieces", "emitted"), [
    (("END",), ["abc E", "N", "D tail"], "abc "),
    (("END",), ["abc E", "x"], "abc Ex"),
    (("\n\n", "###"), ["one\n", "\ntwo"], "one"),
    ((), ["a", "b"], "ab"),
])
def test_stop_matcher(stops: tuple[str, ...], pieces: list[str], emitted: str) -> None:
    m = StopMatcher(stops)
    out = ""
    for p in pieces:
        out += m.feed(p)
        if m.stopped:
            break
    if not m.stopped:
        out += m.flush()
    assert out == emitted
