"""GGUF models through llama.cpp: chat (with the model's own template), completion, embeddings.

Generation goes through :class:`BatchedDecoder`: one llama.cpp context whose KV cache holds
``parallel`` sequences, decoded together one step at a time. The CLI uses one sequence; the
server several, so concurrent requests share each decode step. A sequence's output does not
depend on what else is in the batch (see llama_batch.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, ClassVar

from corral.engines.base import Handler
from corral.engines.streaming import stream_with_stops
from corral.errors import ContextLengthError, UnsupportedTaskError, UsageError
from corral.runtime.devices import wants_gpu
from corral.tasks import (
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    EmbedResult,
    Sampling,
    Task,
    TextChunk,
    TokenLogprob,
    Usage,
)
from corral.templating import render_chat

DEFAULT_CONTEXT = 4096


class LlamaCppHandler(Handler):
    engine = "llama_cpp"
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.COMPLETE, Task.EMBED})
    requires = ("llama_cpp",)
    extra = "llama"

    _decoder: Any = None
    _embedder: Any = None

    def _settings(self) -> tuple[int, int, int]:
        import llama_cpp

        ctx = self.options.context_length or min(self.info.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        gpu = wants_gpu(self.options.device) and bool(llama_cpp.llama_supports_gpu_offload())
        threads = self.options.threads or max(1, (os.cpu_count() or 2))
        return ctx, threads, -1 if gpu else 0

    def load(self) -> None:
        from corral.engines.llama_batch import BatchedDecoder

        ctx, threads, gpu_layers = self._settings()
        self.max_concurrency = max(1, self.options.parallel)
        self._decoder = BatchedDecoder(str(self.path), n_ctx_per_seq=ctx, max_sequences=self.max_concurrency,
                                       n_threads=threads, n_gpu_layers=gpu_layers,
                                       n_batch=max(512, self.max_concurrency))
        self.context_length = ctx
        self._template = self._decoder.metadata().get("tokenizer.chat_template") or None
        self._bos = self._token_text(self._decoder.bos_token)
        self._eos = self._token_text(self._decoder.eos_token)
        self._add_bos = self._decoder.add_bos

    def _token_text(self, token: int) -> str:
        return "" if token < 0 else str(self._decoder.detokenize_piece(token, special=True))

    def unload(self) -> None:
        for part in (self._decoder, self._embedder):
            if part is not None:
                part.close()
        self._decoder = self._embedder = None

    def serves(self) -> frozenset[Task]:
        tasks = super().serves()
        return tasks if self._template or self._decoder is None else tasks - {Task.CHAT}

    # --- generation -------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return list(self._decoder.tokenize(text, add_bos=add_bos))

    def chat(self, request: ChatRequest) -> Iterator[TextChunk]:
        if not self._template:
            raise UnsupportedTaskError(f"{self.path.name} has no chat template; use completion instead")
        prompt = render_chat(self._template, request.messages, bos_token=self._bos, eos_token=self._eos)
        add_bos = self._add_bos and not (self._bos and prompt.startswith(self._bos))
        return self._generate(self.tokenize(prompt, add_bos=add_bos), request.sampling, request.json_schema,
                              request.logprobs)

    def complete(self, request: CompletionRequest) -> Iterator[TextChunk]:
        return self._generate(self.tokenize(request.prompt, add_bos=self._add_bos), request.sampling,
                              request.json_schema, request.logprobs)

    def _generate(self, tokens: list[int], sampling: Sampling, schema: dict[str, Any] | None = None,
                  logprobs: int | None = None) -> Iterator[TextChunk]:
        room = self.context_length - len(tokens)
        if room <= 0:
            raise ContextLengthError(
                f"the prompt is {len(tokens)} tokens but the context holds {self.context_length}",
                "shorten the prompt or conversation")
        max_tokens = min(sampling.max_tokens, room)
        stream = self._decoder.submit(tokens, sampling, max_tokens=max_tokens,
                                      grammar=json_grammar(schema) if schema is not None else None,
                                      logprobs=logprobs)
        counted = [0]

        def pieces() -> Iterator[TextChunk]:
            try:
                for piece in stream:
                    counted[0] += 1
                    lp: tuple[TokenLogprob, ...] = ()
                    if piece.logprob is not None:
                        lp = (TokenLogprob(self._decoder.detokenize_piece(piece.token), piece.logprob,
                                           tuple(piece.top_logprobs or ())),)
                    yield TextChunk(piece.text, logprobs=lp)
                if stream.finish_reason in ("stop", "length"):
                    counted[0] = stream.completion_tokens
            finally:
                stream.cancel()  # a no-op when finished; otherwise the sequence leaves the batch now

        return stream_with_stops(pieces(), sampling.stop, len(tokens), max_tokens, counted)

    # --- embeddings -------------------------------------------------------------------------

    def embed(self, request: EmbedRequest) -> EmbedResult:
        if self._embedder is None:
            import llama_cpp
            from llama_cpp import Llama

            ctx, threads, gpu_layers = self._settings()
            params: dict[str, Any] = {"model_path": str(self.path), "n_ctx": ctx, "n_threads": threads,
                                      "n_gpu_layers": gpu_layers, "embedding": True, "verbose": False}
            meta = self._decoder.metadata() if self._decoder is not None else {}
            if not any(k.endswith(".pooling_type") for k in meta):
                # decoder models declare no pooling: mean-pool so one input gives one vector
                params["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            self._embedder = Llama(**params)
        vectors, n_tokens = self._embedder.embed(list(request.inputs), normalize=request.normalize,
                                                 truncate=True, return_count=True)
        return EmbedResult([list(map(float, v)) for v in vectors], Usage(prompt_tokens=int(n_tokens)))


def json_grammar(schema: dict[str, Any]) -> str:
    """GBNF that only admits JSON matching ``schema`` ({"type": "object"} for any object)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter rejects schemas it cannot express
        raise UsageError(f"cannot constrain output to this JSON schema: {exc}") from None
