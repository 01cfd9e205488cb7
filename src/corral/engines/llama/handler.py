"""GGUF models through llama.cpp: chat (with the model's own template), completion, embeddings.

Generation goes through :class:`BatchedDecoder`: one llama.cpp context whose KV cache holds
``parallel`` sequences, decoded together one step at a time. The CLI uses one sequence; the
server several, so concurrent requests share each decode step. A sequence's output does not
depend on what else is in the batch (see batch.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from corral.devices import usable_cpus, wants_gpu
from corral.engines.base import Handler
from corral.engines.llama.sampling import TOP_K
from corral.engines.streaming import stream_with_stops, tokens_to_generate
from corral.errors import UnsupportedTaskError, UsageError
from corral.models.gguf_reader import read_gguf_header
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

    _decoder: Any = None  # BatchedDecoder, when several sequences decode together
    _single: Any = None  # llama_cpp.Llama, when one sequence at a time
    _embedder: Any = None

    def _settings(self) -> tuple[int, int, int]:
        import llama_cpp

        ctx = self.options.context_length or min(self.info.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        gpu = wants_gpu(self.options.device) and bool(llama_cpp.llama_supports_gpu_offload())
        threads = self.options.threads or usable_cpus()
        return ctx, threads, -1 if gpu else 0

    def _checked_path(self) -> str:
        """The model file, its header read again with corral's bounded reader just before llama.cpp
        opens it (the file may have changed since it was inspected): a crafted or damaged GGUF is an
        InvalidModelFileError here and never reaches llama.cpp's loader."""
        if self.path.is_file():
            read_gguf_header(self.path)
        return str(self.path)

    def load(self) -> None:
        model_path = self._checked_path()
        ctx, threads, gpu_layers = self._settings()
        self.max_concurrency = max(1, self.options.parallel)
        self.context_length = ctx
        if self.max_concurrency == 1:
            # one sequence: llama-cpp-python in the caller's thread (no hand-off between threads). With
            # flash attention on it gives the same tokens as the batched decoder.
            from llama_cpp import Llama

            self._single = Llama(model_path=model_path, n_ctx=ctx, n_threads=threads, n_gpu_layers=gpu_layers,
                                 flash_attn=True, verbose=False)
            meta: dict[str, str] = dict(self._single.metadata)
            bos, eos = self._single.token_bos(), self._single.token_eos()
            self._add_bos = bool(self._single._model.add_bos_token())
        else:
            from corral.engines.llama.batch import BatchedDecoder

            self._decoder = BatchedDecoder(model_path, n_ctx_per_seq=ctx, max_sequences=self.max_concurrency,
                                           n_threads=threads, n_gpu_layers=gpu_layers,
                                           n_batch=max(512, self.max_concurrency))
            meta = self._decoder.metadata()
            bos, eos = self._decoder.bos_token, self._decoder.eos_token
            self._add_bos = self._decoder.add_bos
        self._template = meta.get("tokenizer.chat_template") or None
        self._bos, self._eos = self._token_text(bos), self._token_text(eos)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        if self._single is not None:
            return bytes(self._single.detokenize([token], special=True)).decode("utf-8", errors="replace")
        return str(self._decoder.detokenize_piece(token, special=True))

    def unload(self) -> None:
        for part in (self._decoder, self._single, self._embedder):
            if part is not None:
                part.close()
        self._decoder = self._single = self._embedder = None

    def serves(self) -> frozenset[Task]:
        tasks = super().serves()
        loaded = self._decoder is not None or self._single is not None
        return tasks if self._template or not loaded else tasks - {Task.CHAT}

    # --- generation -------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        if self._single is not None:
            return list(self._single.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))
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
        max_tokens = tokens_to_generate(len(tokens), self.context_length, sampling.max_tokens, sampling.context)
        if self._single is not None:
            return self._generate_single(tokens, sampling, max_tokens, schema, logprobs)
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

    def _generate_single(self, tokens: list[int], sampling: Sampling, max_tokens: int,
                         schema: dict[str, Any] | None, logprobs: int | None) -> Iterator[TextChunk]:
        if logprobs is not None:
            raise UnsupportedTaskError("logprobs need the batched decoder: serve with --parallel 2 or more")
        from llama_cpp import StoppingCriteriaList
        from llama_cpp.llama_grammar import LlamaGrammar

        grammar = LlamaGrammar.from_string(json_grammar(schema), verbose=False) if schema is not None else None
        counted = [0]

        def count(_ids: Any, _logits: Any) -> bool:
            counted[0] += 1
            return False

        def pieces() -> Iterator[str]:
            stream = self._single.create_completion(
                tokens, max_tokens=max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
                top_k=TOP_K if sampling.top_k is None else sampling.top_k,
                seed=sampling.seed, stream=True, stopping_criteria=StoppingCriteriaList([count]), grammar=grammar)
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    if choice["text"]:
                        yield choice["text"]
                    reason = choice.get("finish_reason")
                    if reason:
                        # the criteria run once per sampled token and once more after the loop; on "stop"
                        # the last sampled token is end-of-generation
                        counted[0] = max(0, counted[0] - (2 if reason == "stop" else 1))
            finally:
                stream.close()

        return stream_with_stops(pieces(), sampling.stop, len(tokens), max_tokens, counted)

    # --- embeddings -------------------------------------------------------------------------

    def embed(self, request: EmbedRequest) -> EmbedResult:
        if self._embedder is None:
            import llama_cpp
            from llama_cpp import Llama

            ctx, threads, gpu_layers = self._settings()
            params: dict[str, Any] = {"model_path": self._checked_path(), "n_ctx": ctx, "n_threads": threads,
                                      "n_gpu_layers": gpu_layers, "embedding": True, "verbose": False}
            meta = (self._decoder.metadata() if self._decoder is not None
                    else dict(self._single.metadata) if self._single is not None else {})
            if not any(k.endswith(".pooling_type") for k in meta):
                # decoder models declare no pooling: mean-pool so one input gives one vector
                params["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            self._embedder = Llama(**params)
        vectors, n_tokens = self._embedder.embed(list(request.texts(self.path.name)), normalize=request.normalize,
                                                 truncate=True, return_count=True)
        return EmbedResult([list(map(float, v)) for v in vectors], Usage(prompt_tokens=int(n_tokens)))


def json_grammar(schema: dict[str, Any]) -> str:
    """GBNF that only admits JSON matching ``schema`` ({"type": "object"} for any object)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter rejects schemas it cannot express
        raise UsageError(f"cannot constrain output to this JSON schema: {exc}") from None
