"""Hugging Face causal LMs through transformers: chat, completion, streaming, on CPU/CUDA/MPS.

Generation runs in a worker thread feeding a TextIteratorStreamer; closing the returned
iterator sets a cancel flag that a StoppingCriteria checks after every token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from corral.engines.base import Handler
from corral.engines.streaming import stream_with_stops, tokens_to_generate
from corral.errors import CorralError, UnsupportedTaskError
from corral.runtime.devices import pick_torch_device
from corral.tasks import ChatRequest, CompletionRequest, Sampling, Task, TextChunk
from corral.templating import render_chat


class GenerationFailed(CorralError):
    http_status = 500


class TransformersLMHandler(Handler):
    engine = "transformers"
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.COMPLETE})
    requires = ("transformers", "torch")
    extra = "torch"

    model: Any = None
    tokenizer: Any = None

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from corral.engines.hf_quiet import quiet_hf

        quiet_hf()
        self.device = pick_torch_device(self.options.device)
        trust = self.options.trust
        dtype = torch.float16 if self.device.startswith("cuda") and self.info.dtype == "float32" else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(
            str(self.path), trust_remote_code=trust.trust_remote_code,
            use_safetensors=not trust.allow_pickle, dtype=dtype,
        )
        self.model.to(self.device)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(self.path), trust_remote_code=trust.trust_remote_code)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0)
                                  or getattr(self.model.config, "n_positions", 0) or 2048)

    def unload(self) -> None:
        self.model = self.tokenizer = None
        if getattr(self, "device", "cpu").startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def chat(self, request: ChatRequest) -> Iterator[TextChunk]:
        template = getattr(self.tokenizer, "chat_template", None)
        if not isinstance(template, str) or not template:
            raise UnsupportedTaskError(f"{self.path.name} has no chat template; use completion instead")
        prompt = render_chat(template, request.messages,
                             bos_token=self.tokenizer.bos_token or "", eos_token=self.tokenizer.eos_token or "")
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return self._generate(ids, request.sampling, request.json_schema, request.logprobs)

    def complete(self, request: CompletionRequest) -> Iterator[TextChunk]:
        ids = self.tokenizer(request.prompt, return_tensors="pt")["input_ids"]
        return self._generate(ids, request.sampling, request.json_schema, request.logprobs)

    def _generate(self, input_ids: Any, sampling: Sampling, schema: dict[str, Any] | None = None,
                  logprobs: int | None = None) -> Iterator[TextChunk]:
        if schema is not None:
            raise UnsupportedTaskError("JSON-constrained output (response_format, forced tool calls) needs a "
                                       "GGUF model on the llama.cpp engine for now")
        if logprobs is not None:
            raise UnsupportedTaskError("logprobs are not available on the transformers engine yet")
        n_prompt = int(input_ids.shape[1])
        max_tokens = tokens_to_generate(n_prompt, self.context_length, sampling.max_tokens)
        counted = [0]
        return stream_with_stops(self._pieces(input_ids, sampling, max_tokens, counted),
                                 sampling.stop, n_prompt, max_tokens, counted)

    def _pieces(self, input_ids: Any, sampling: Sampling, max_tokens: int,
                counted: list[int]) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel = threading.Event()
        n_prompt = int(input_ids.shape[1])

        class Watch(StoppingCriteria):
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                counted[0] = int(ids.shape[1]) - n_prompt
                return torch.full((ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=ids.device)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        greedy = sampling.temperature <= 0
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": torch.ones_like(input_ids).to(self.device),
            "max_new_tokens": max_tokens, "do_sample": not greedy, "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([Watch()]),
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                with torch.inference_mode():
                    out = self.model.generate(**kwargs)
                counted[0] = int(out.shape[1]) - n_prompt
                eos = self.tokenizer.eos_token_id
                if counted[0] and eos is not None and int(out[0, -1]) == eos:
                    counted[0] -= 1
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.on_finalized_text("", stream_end=True)

        worker = threading.Thread(target=work, name="corral-generate", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:
            cancel.set()
            worker.join()
        if errors:
            raise GenerationFailed(f"generation failed: {type(errors[0]).__name__}: {errors[0]}")
