"""GGUF models through llama-cpp-python: chat (with the model's own template), completion,
embeddings, streaming."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar

from corral.engines.base import Handler
from corral.engines.streaming import stream_with_stops
from corral.errors import ContextLengthError, UnsupportedTaskError
from corral.runtime.devices import wants_gpu
from corral.tasks import ChatRequest, CompletionRequest, EmbedRequest, EmbedResult, Sampling, Task, TextChunk, Usage
from corral.templating import render_chat

DEFAULT_CONTEXT = 4096


class LlamaCppHandler(Handler):
    engine = "llama_cpp"
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.COMPLETE, Task.EMBED})
    requires = ("llama_cpp",)
    extra = "llama"

    _llm: Any = None
    _embedder: Any = None

    def _params(self, embedding: bool) -> dict[str, Any]:
        import llama_cpp

        ctx = self.options.context_length or min(self.info.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        gpu = wants_gpu(self.options.device) and bool(llama_cpp.llama_supports_gpu_offload())
        threads = self.options.threads or max(1, (os.cpu_count() or 2))
        params: dict[str, Any] = {"model_path": str(self.path), "n_ctx": ctx, "n_threads": threads,
                                  "n_gpu_layers": -1 if gpu else 0, "embedding": embedding,
                                  "verbose": False}
        if embedding and f"{self.info.model_type}.pooling_type" not in self._pooling_keys():
            # decoder models declare no pooling: mean-pool so one input gives one vector
            params["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        return params

    def _pooling_keys(self) -> set[str]:
        return {k for k in (self._llm.metadata if self._llm is not None else {}) if k.endswith(".pooling_type")}

    def load(self) -> None:
        from llama_cpp import Llama

        params = self._params(embedding=False)
        self._llm = Llama(**params)
        # llama.cpp may pad the context; llama-cpp-python's buffers keep the size asked for
        self.context_length = min(int(self._llm.n_ctx()), int(params["n_ctx"]))
        meta = self._llm.metadata
        self._template = meta.get("tokenizer.chat_template") or None
        self._bos = self._token_text(self._llm.token_bos())
        self._eos = self._token_text(self._llm.token_eos())
        self._add_bos = bool(self._llm._model.add_bos_token())

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(self._llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    def unload(self) -> None:
        for llm in (self._llm, self._embedder):
            if llm is not None:
                llm.close()
        self._llm = self._embedder = None

    def serves(self) -> frozenset[Task]:
        tasks = super().serves()
        return tasks if self._template or self._llm is None else tasks - {Task.CHAT}

    # --- generation -------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

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
        if logprobs is not None:
            raise UnsupportedTaskError("logprobs need the batched llama.cpp decoder (corral serve)")
        room = self.context_length - len(tokens)
        if room <= 0:
            raise ContextLengthError(
                f"the prompt is {len(tokens)} tokens but the context holds {self.context_length}",
                "shorten the prompt or conversation")
        max_tokens = min(sampling.max_tokens, room)
        counted = [0]

        def count(_ids: Any, _logits: Any) -> bool:
            counted[0] += 1
            return False

        grammar = json_grammar(schema) if schema is not None else None

        def pieces() -> Iterator[str]:
            from llama_cpp import StoppingCriteriaList

            stream = self._llm.create_completion(
                tokens, max_tokens=max_tokens, temperature=sampling.temperature,
                top_p=sampling.top_p, seed=sampling.seed, stream=True,
                stopping_criteria=StoppingCriteriaList([count]), grammar=grammar)
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    if choice["text"]:
                        yield choice["text"]
                    reason = choice.get("finish_reason")
                    if reason:
                        # llama-cpp calls the criteria once per sampled token and once more
                        # after the loop; on "stop" the last sampled token is end-of-generation.
                        counted[0] = max(0, counted[0] - (2 if reason == "stop" else 1))
            finally:
                stream.close()

        return stream_with_stops(pieces(), sampling.stop, len(tokens), max_tokens, counted)

    # --- embeddings -------------------------------------------------------------------------

    def embed(self, request: EmbedRequest) -> EmbedResult:
        if self._embedder is None:
            from llama_cpp import Llama

            self._embedder = Llama(**self._params(embedding=True))
        vectors, n_tokens = self._embedder.embed(list(request.inputs), normalize=request.normalize,
                                                 truncate=True, return_count=True)
        return EmbedResult([list(map(float, v)) for v in vectors], Usage(prompt_tokens=int(n_tokens)))


def json_grammar(schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar that only admits JSON matching ``schema`` (any JSON object for {})."""
    import json

    from llama_cpp.llama_grammar import LlamaGrammar

    from corral.errors import UsageError

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # the converter rejects schemas it cannot express
        raise UsageError(f"cannot constrain output to this JSON schema: {exc}") from None
