"""Image-text chat models through transformers (``AutoModelForImageTextToText`` with their
``AutoProcessor``: LLaVA-style, Qwen2-VL-style, Idefics3 / SmolVLM): chat whose messages carry
images, and describe_image as a one-message chat. The conversation is rendered by corral's
sandboxed template renderer with each message's content as the list of text and image items
image-text templates expect; the processor turns the prompt and the images into token ids (each
image's placeholder expanded to its patches) and pixel values. Generation, sampling, stop
sequences, JSON constraints and logprobs are the causal-LM handler's, one sequence at a time (the
continuous batcher takes text only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from corral.engines.table import EngineSpec
from corral.engines.transformers.lm import TransformersLMHandler
from corral.errors import UnsupportedTaskError
from corral.tasks import ChatRequest, DescribeImageRequest, ImagePart, Message, TextChunk
from corral.templating import render_chat

DESCRIBE_PROMPT = "Describe this image."


class VisionChatHandler(TransformersLMHandler):
    processor: Any = None

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        super().import_libraries(spec)
        from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: F401

    def load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = self._weights(AutoModelForImageTextToText)
        self.processor = AutoProcessor.from_pretrained(  # type: ignore[no-untyped-call]
            str(self.path), trust_remote_code=self.options.trust.trust_remote_code)
        self.tokenizer = self.processor.tokenizer
        self._ready(self.model.config.get_text_config())

    def unload(self) -> None:
        super().unload()
        self.processor = None

    def chat(self, request: ChatRequest) -> Iterator[TextChunk]:
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if not isinstance(template, str) or not template:
            raise UnsupportedTaskError(f"{self.path.name} has no chat template")
        prompt = render_chat(template, request.messages, as_parts=True,
                             bos_token=self.tokenizer.bos_token or "", eos_token=self.tokenizer.eos_token or "")
        input_ids, extra = self._inputs(prompt, list(request.images))
        return self._generate(input_ids, request.sampling, request.json_schema, request.logprobs, extra)

    def describe_image(self, request: DescribeImageRequest) -> Iterator[TextChunk]:
        prompt = request.prompt or DESCRIBE_PROMPT
        message = Message("user", prompt, parts=(ImagePart(request.image), prompt))
        return self.chat(ChatRequest((message,), sampling=request.sampling, json_schema=request.json_schema,
                                     logprobs=request.logprobs))

    def _inputs(self, prompt: str, images: list[Any]) -> tuple[list[int], dict[str, Any]]:
        """(the prompt's token ids with each image's placeholder expanded, the other model inputs:
        pixel values in the model's dtype and what else the processor made for the images)."""
        features = self.processor(text=[prompt], images=[images] if images else None, return_tensors="pt",
                                  add_special_tokens=False)
        input_ids = [int(t) for t in features.pop("input_ids")[0]]
        features.pop("attention_mask", None)
        extra: dict[str, Any] = {}
        for name, value in features.items():
            if hasattr(value, "to"):
                value = value.to(self.device)
                extra[name] = value.to(self.model.dtype) if value.is_floating_point() else value
        return input_ids, extra
