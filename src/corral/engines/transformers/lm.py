"""Hugging Face causal LMs through transformers: chat, completion, streaming, on CPU/CUDA/MPS.

Both paths produce token ids, which :class:`~corral.engines.detokenize.IncrementalDetokenizer`
turns into text:

- one sequence (the CLI, ``serve --parallel 1``): ``model.generate`` in a worker thread, its
  tokens handed over by a streamer; closing the iterator sets a flag a StoppingCriteria checks;
- several (``serve``'s default): transformers' continuous batching, through
  :mod:`corral.engines.transformers.continuous`; closing the iterator cancels the request.

Either way ``generate`` runs greedy and each request's own
:class:`~corral.engines.transformers.sampling.RequestSampler` does the sampling and logprobs, so a
request's tokens do not depend on the path or on its neighbours.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator
from typing import Any

from corral.engines.base import Handler
from corral.engines.detokenize import IncrementalDetokenizer
from corral.engines.streaming import stream_with_stops, tokens_to_generate
from corral.engines.table import EngineSpec
from corral.engines.transformers.constraint import ConstraintFactory
from corral.engines.transformers.generate import stream_generate
from corral.engines.transformers.sampling import RequestSampler, SamplerLogitsProcessor, TokenRecord
from corral.errors import UnsupportedTaskError
from corral.tasks import ChatRequest, CompletionRequest, Sampling, TextChunk, TokenLogprob
from corral.templating import render_chat

log = logging.getLogger("corral.engines")


class TransformersLMHandler(Handler):
    engine = "transformers"

    model: Any = None
    tokenizer: Any = None
    batcher: Any = None  # a ContinuousBatcher when several sequences run together

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        """Also the modules transformers imports lazily on a first load: its modeling core alone holds
        ~110 MiB, which a first load's measurement would otherwise count as the model's."""
        super().import_libraries(spec)
        import transformers.modeling_utils  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: F401

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = self._weights(AutoModelForCausalLM)
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(self.path), trust_remote_code=self.options.trust.trust_remote_code)
        self._ready(self.model.config)
        if self.options.parallel > 1:
            self._start_batching(self.options.parallel)

    def _weights(self, auto_class: Any) -> Any:
        from corral.engines.transformers.loading import load_weights

        model, self.device = load_weights(self, auto_class)
        return model

    def _ready(self, text_config: Any) -> None:
        """What generation needs once the model and tokenizer are in place."""
        self.context_length = int(getattr(text_config, "max_position_embeddings", 0)
                                  or getattr(text_config, "n_positions", 0) or 2048)
        self.eos_ids = end_of_sequence_ids(self.model, self.tokenizer)
        self.constraints = ConstraintFactory(self.tokenizer, self.eos_ids)
        self.batch_lock = threading.Lock()

    def _start_batching(self, sequences: int) -> None:
        from corral.engines.transformers.continuous import start_batcher

        self.batcher = start_batcher(self.model, self.eos_ids, sequences, self.context_length)
        if self.batcher is not None:
            self.max_concurrency = sequences

    def _live_batcher(self) -> Any:
        """The running batcher, or None for one request at a time. A batcher whose thread died
        (the requests it had failed with BatchFailed) is replaced here, by the next request."""
        with self.batch_lock:
            if self.batcher is not None and not self.batcher.alive():
                log.warning("the batching thread of %s stopped; starting a new one", self.path.name)
                self.batcher.close()
                self.batcher = None
                self._start_batching(self.options.parallel)
            return self.batcher

    def unload(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.model = self.tokenizer = self.batcher = None
        if getattr(self, "device", "cpu").startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def chat(self, request: ChatRequest) -> Iterator[TextChunk]:
        template = getattr(self.tokenizer, "chat_template", None)
        if not isinstance(template, str) or not template:
            raise UnsupportedTaskError(f"{self.path.name} has no chat template; use completion instead")
        prompt = render_chat(template, request.messages,
                             bos_token=self.tokenizer.bos_token or "", eos_token=self.tokenizer.eos_token or "")
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return self._generate(list(ids), request.sampling, request.json_schema, request.logprobs)

    def complete(self, request: CompletionRequest) -> Iterator[TextChunk]:
        ids = self.tokenizer(request.prompt)["input_ids"]
        return self._generate(list(ids), request.sampling, request.json_schema, request.logprobs)

    def _generate(self, input_ids: list[int], sampling: Sampling, schema: dict[str, Any] | None = None,
                  logprobs: int | None = None, extra: dict[str, Any] | None = None) -> Iterator[TextChunk]:
        """``input_ids``' continuation as text chunks; ``extra``: more model inputs (an image's pixels),
        which only the one-sequence path takes."""
        n_prompt = len(input_ids)
        batcher = None if extra else self._live_batcher()
        # a batched sequence must also fit in the shared paged cache
        context = self.context_length if batcher is None else min(self.context_length, batcher.capacity)
        max_tokens = tokens_to_generate(n_prompt, context, sampling.max_tokens, sampling.context)
        constraint = None if schema is None else self.constraints.json(schema)
        sampler = RequestSampler(sampling, logprobs, self.device, constraint)
        if batcher is not None:
            tokens = batcher.stream(input_ids, max_tokens, sampler)
        else:
            tokens = self._solo(input_ids, max_tokens, sampler, extra or {})
        counted = [0]
        return stream_with_stops(self._pieces(tokens, sampler, counted), sampling.stop, n_prompt, max_tokens,
                                 counted)

    def _pieces(self, tokens: Generator[int, None, None], sampler: RequestSampler,
                counted: list[int]) -> Iterator[TextChunk]:
        """Token ids to text chunks; ``counted[0]`` tracks the tokens generated (end-of-sequence excluded)."""
        detok = IncrementalDetokenizer(self.tokenizer)
        held: list[TokenLogprob] = []
        try:
            for token in tokens:
                if token in self.eos_ids:
                    break
                if sampler.logprobs is not None and counted[0] < len(sampler.records):
                    held.append(self._logprob(sampler.records[counted[0]]))
                counted[0] += 1
                text = detok.push(token)
                if text:
                    yield TextChunk(text, logprobs=tuple(held))
                    held = []
        finally:
            tokens.close()  # stops generation when the consumer stopped early
        rest = detok.flush()
        if rest or held:
            yield TextChunk(rest, logprobs=tuple(held))

    def _logprob(self, record: TokenRecord) -> TokenLogprob:
        piece = self._piece
        return TokenLogprob(piece(record.token), record.logprob, tuple((piece(t), v) for t, v in record.top))

    def _piece(self, token: int) -> str:
        return str(self.tokenizer.decode([token], skip_special_tokens=False))

    def _solo(self, input_ids: list[int], max_tokens: int, sampler: RequestSampler,
              extra: dict[str, Any]) -> Generator[int, None, None]:
        """One sequence through ``model.generate`` in a worker thread."""
        import torch

        from transformers import GenerationConfig, LogitsProcessorList

        ids = torch.tensor([input_ids], device=self.device)
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False, max_new_tokens=max_tokens, eos_token_id=self.eos_ids,
            pad_token_id=pad_token_id(self.tokenizer, self.eos_ids))
        processors = LogitsProcessorList([] if sampler.passive else [SamplerLogitsProcessor(sampler)])
        return stream_generate(self.model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), **extra},
                               config, processors)


def end_of_sequence_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a sequence, from the generation config and the tokenizer."""
    found: list[int] = []
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for token in source if isinstance(source, list) else [source]:
            if isinstance(token, int) and token not in found:
                found.append(token)
    return found


def pad_token_id(tokenizer: Any, eos_ids: list[int]) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else (eos_ids[0] if eos_ids else 0)
