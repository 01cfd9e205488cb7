"""The transformers engine on tiny random-weight causal LMs built from configs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.tiny_models import build_causal_lm

from corral.engines.base import Handler, LoadOptions, handler_class
from corral.models.inspect import inspect_path
from corral.models.safety import Trust
from corral.tasks import ChatRequest, CompletionRequest, Message, Sampling, Task, TextChunk
from corral.templating import render_chat

CONVERSATION = (Message("system", "You are terse."), Message("user", "hello there"))


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Handler]:
    model = build_causal_lm(request.param, tmp_path_factory.mktemp(request.param))
    handler = handler_class("transformers")(model.path, inspect_path(model.path), LoadOptions(device="cpu"))
    handler.load()
    yield handler
    handler.unload()


def greedy(n: int = 12, **kw: object) -> Sampling:
    return Sampling(**{"max_tokens": n, "temperature": 0.0, "seed": 0, **kw})  # type: ignore[arg-type]


def collect(chunks: Iterator[TextChunk]) -> tuple[str, TextChunk]:
    items = list(chunks)
    return "".join(c.text for c in items), items[-1]


def test_serves_chat_and_complete(lm: Handler) -> None:
    assert lm.serves() == {Task.CHAT, Task.COMPLETE}


def test_sandboxed_template_matches_transformers(lm: Handler) -> None:
    tok = lm.tokenizer  # type: ignore[attr-defined]
    ours = render_chat(tok.chat_template, CONVERSATION, bos_token=tok.bos_token or "", eos_token=tok.eos_token or "")
    theirs = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in CONVERSATION],
                                     tokenize=False, add_generation_prompt=True)
    assert ours == theirs


def test_greedy_equals_plain_generate(lm: Handler) -> None:
    import torch

    text, last = collect(lm.complete(CompletionRequest("hello world", greedy(10))))
    tok, model = lm.tokenizer, lm.model  # type: ignore[attr-defined]
    ids = tok("hello world", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                             pad_token_id=tok.pad_token_id or tok.eos_token_id)
    new = out[0, ids.shape[1]:]
    assert text == tok.decode(new, skip_special_tokens=True)
    assert last.usage is not None and last.usage.prompt_tokens == ids.shape[1]
    eos_ended = tok.eos_token_id is not None and int(new[-1]) == tok.eos_token_id
    assert last.usage.completion_tokens == len(new) - int(eos_ended)


def test_chat_is_deterministic(lm: Handler) -> None:
    a = [c.text for c in lm.chat(ChatRequest(CONVERSATION, greedy()))]
    b = [c.text for c in lm.chat(ChatRequest(CONVERSATION, greedy()))]
    assert a == b


def test_seeded_sampling_is_reproducible(lm: Handler) -> None:
    hot = Sampling(max_tokens=12, temperature=1.0, top_p=1.0, seed=99)
    a, _ = collect(lm.complete(CompletionRequest("hello", hot)))
    b, _ = collect(lm.complete(CompletionRequest("hello", hot)))
    assert a == b


def test_length_and_stop(lm: Handler) -> None:
    full, last = collect(lm.complete(CompletionRequest("hello world", greedy(16))))
    assert last.finish_reason in ("length", "stop")
    if len(full) < 4:
        pytest.skip("this random model ended its answer too soon to cut it")
    stop = full[2:4]
    text, last = collect(lm.complete(CompletionRequest("hello world", greedy(16, stop=(stop,)))))
    assert text == full[: full.find(stop)] and last.finish_reason == "stop"


def test_closing_the_stream_stops_the_worker(lm: Handler) -> None:
    before = threading.active_count()
    stream = lm.complete(CompletionRequest("hello", greedy(500)))
    next(stream)
    stream.close()
    assert threading.active_count() == before
    assert not any(t.name == "corral-generate" for t in threading.enumerate())


def test_pickle_opt_in_reaches_the_library(tmp_path: Path) -> None:
    """use_safetensors is passed from the Trust opt-in: without it a .bin-only model cannot load."""
    import torch
    from transformers import AutoModelForCausalLM

    model = build_causal_lm("gpt2", tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(str(model.path))
    (model.path / "model.safetensors").unlink()
    torch.save(loaded.state_dict(), model.path / "pytorch_model.bin")
    info = inspect_path(model.path)
    assert info.needs_pickle
    handler = handler_class("transformers")(model.path, info, LoadOptions(device="cpu", trust=Trust(allow_pickle=True)))
    handler.load()
    text, _ = collect(handler.complete(CompletionRequest("hello", greedy(4))))
    assert isinstance(text, str)
    refused = handler_class("transformers")(model.path, info, LoadOptions(device="cpu"))
    with pytest.raises(OSError):
        refused.load()
