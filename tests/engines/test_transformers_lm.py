"""The transformers engine on tiny random-weight causal LMs built from configs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.tiny_models import build_causal_lm

from corral.engines.base import Handler, LoadOptions, handler_class
from corral.engines.transformers.sampling import RequestSampler
from corral.models.inspect import inspect_path
from corral.models.safety import Trust
from corral.tasks import ChatRequest, CompletionRequest, Message, Sampling, Task, TextChunk
from corral.templating import render_chat

CONVERSATION = (Message("system", "You are terse."), Message("user", "hello there"))


@pytest.fixture(scope="module", params=[("llama", 1), ("llama", 4), ("gpt2", 1), ("gpt2", 4)],
                ids=["llama-generate", "llama-batched", "gpt2-generate", "gpt2-batched"])
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Handler]:
    """Every test runs on both paths: plain ``generate`` (one sequence) and continuous batching."""
    family, parallel = request.param
    model = build_causal_lm(family, tmp_path_factory.mktemp(family))
    options = LoadOptions(device="cpu", parallel=parallel)
    handler = handler_class("transformers")(model.path, inspect_path(model.path), options)
    handler.load()
    assert handler.max_concurrency == parallel  # batching really started where asked
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

    text, last = collect(lm.complete(CompletionRequest("hello world", sampling=greedy(10))))
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
    a = [c.text for c in lm.chat(ChatRequest(CONVERSATION, sampling=greedy()))]
    b = [c.text for c in lm.chat(ChatRequest(CONVERSATION, sampling=greedy()))]
    assert a == b


def test_seeded_sampling_is_reproducible(lm: Handler) -> None:
    hot = Sampling(max_tokens=12, temperature=1.0, top_p=1.0, seed=99)
    a, _ = collect(lm.complete(CompletionRequest("hello", sampling=hot)))
    b, _ = collect(lm.complete(CompletionRequest("hello", sampling=hot)))
    assert a == b


def test_length_and_stop(lm: Handler) -> None:
    full, last = collect(lm.complete(CompletionRequest("hello world", sampling=greedy(16))))
    assert last.finish_reason in ("length", "stop")
    if len(full) < 4:
        pytest.skip("this random model ended its answer too soon to cut it")
    stop = full[2:4]
    text, last = collect(lm.complete(CompletionRequest("hello world", sampling=greedy(16, stop=(stop,)))))
    assert text == full[: full.find(stop)] and last.finish_reason == "stop"


def test_closing_the_stream_stops_generation(lm: Handler) -> None:
    before = threading.active_count()
    stream = lm.complete(CompletionRequest("hello", sampling=greedy(500), logprobs=0))
    next(stream)
    # the request's sampler records every token the model produces for it: none may come after close
    samplers = [r for r in gc_samplers() if r.logprobs == 0]
    assert len(samplers) == 1
    stream.close()
    assert threading.active_count() == before
    assert not any(t.name == "corral-generate" for t in threading.enumerate())
    made = [len(s.records) for s in samplers]
    time.sleep(0.3)
    assert [len(s.records) for s in samplers] == made and max(made) < 500


def gc_samplers() -> list[RequestSampler]:
    import gc
    import warnings

    with warnings.catch_warnings():  # isinstance() on every live object touches deprecated torch aliases
        warnings.simplefilter("ignore", FutureWarning)
        return [o for o in gc.get_objects() if isinstance(o, RequestSampler)]


def test_logprobs_are_the_model_distribution(lm: Handler) -> None:
    import torch

    chunks = list(lm.complete(CompletionRequest("hello world", sampling=greedy(3), logprobs=3)))
    lps = [lp for c in chunks for lp in c.logprobs]
    assert len(lps) == chunks[-1].usage.completion_tokens  # type: ignore[union-attr]
    tok, model = lm.tokenizer, lm.model  # type: ignore[attr-defined]
    ids = tok("hello world", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        first = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
    assert lps[0].logprob == pytest.approx(float(first.max()), abs=1e-4)
    assert lps[0].top[0][0] == lps[0].token  # greedy: the chosen token is the likeliest
    values = [v for _, v in lps[0].top]
    assert len(values) == 3 and values == sorted(values, reverse=True)


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
    text, _ = collect(handler.complete(CompletionRequest("hello", sampling=greedy(4))))
    assert isinstance(text, str)
    refused = handler_class("transformers")(model.path, info, LoadOptions(device="cpu"))
    with pytest.raises(OSError):
        refused.load()


def test_the_pickle_opt_in_still_loads_safetensors(tmp_path: Path) -> None:
    """Allowing pickle must not skip the safetensors weights (use_safetensors=False would: the library then
    looks only for pickle files)."""
    model = build_causal_lm("gpt2", tmp_path / "m")
    info = inspect_path(model.path)
    handler = handler_class("transformers")(model.path, info, LoadOptions(device="cpu", trust=Trust(allow_pickle=True)))
    handler.load()
    text, _ = collect(handler.complete(CompletionRequest("hello", sampling=greedy(4))))
    assert isinstance(text, str)


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["ok", "n", "color"],
          "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9},
                         "color": {"enum": ["red", "green"]}}}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_constrains_the_output(lm: Handler, temperature: float) -> None:
    """Even a random-weight model answers with JSON that validates: the grammar decides, not luck."""
    import json

    import jsonschema

    sampling = Sampling(max_tokens=80, temperature=temperature, seed=5)
    text, last = collect(lm.complete(CompletionRequest("hello", sampling=sampling, json_schema=SCHEMA)))
    jsonschema.validate(json.loads(text), SCHEMA)
    assert last.finish_reason == "stop"  # the grammar ended the answer, not max_tokens
    short = {"type": "object", "properties": {"word": {"type": "string", "maxLength": 4}}, "required": ["word"],
             "additionalProperties": False}
    chat, _ = collect(lm.chat(ChatRequest(CONVERSATION, sampling=sampling, json_schema=short)))
    jsonschema.validate(json.loads(chat), short)


def test_an_unusable_schema_is_a_clear_error(lm: Handler) -> None:
    from corral.errors import UsageError

    with pytest.raises(UsageError, match="JSON schema"):
        lm.complete(CompletionRequest("hello", sampling=greedy(), json_schema={"type": "no-such-type"}))
