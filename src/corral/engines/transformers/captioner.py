"""Image-to-text models through transformers (``AutoModelForImageTextToText``): captioners whose
decoder reads the image's features (VisionEncoderDecoder: ViT + GPT-2 style, BLIP), streamed
token by token through the shared generate helper and the causal LMs' sampler (greedy unless the
request samples). The image is prepared by the model's PIL image processor; ``prompt`` is passed
to processors that take text (BLIP's conditional captioning), and ignored otherwise."""

from __future__ import annotations

from collections.abc import Iterator

from corral.engines.streaming import stream_with_stops, tokens_to_generate
from corral.engines.transformers.generate import stream_generate, text_pieces
from corral.engines.transformers.lm import end_of_sequence_ids, pad_token_id
from corral.engines.transformers.loading import TorchTaskHandler
from corral.engines.transformers.sampling import RequestSampler, SamplerLogitsProcessor
from corral.tasks import DescribeImageRequest, TextChunk


class CaptionerHandler(TorchTaskHandler):
    auto_class = "AutoModelForImageTextToText"
    uses_image_processor = True

    def loaded(self) -> None:
        self.eos_ids = end_of_sequence_ids(self.model, self.tokenizer)

    def describe_image(self, request: DescribeImageRequest) -> Iterator[TextChunk]:
        from transformers import GenerationConfig, LogitsProcessorList

        inputs = dict(self.processor(request.image, return_tensors="pt").to(self.device))
        limit = int(getattr(getattr(self.model.config, "decoder", self.model.config), "max_position_embeddings", 0)
                    or 512)
        max_tokens = tokens_to_generate(1, limit, request.sampling.max_tokens)  # the start token takes a position
        sampler = RequestSampler(request.sampling, None, self.device, None)
        start = getattr(self.model.config, "decoder_start_token_id", None)
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False, max_new_tokens=max_tokens, eos_token_id=self.eos_ids,
            pad_token_id=pad_token_id(self.tokenizer, self.eos_ids),
            decoder_start_token_id=start if start is not None else self.tokenizer.bos_token_id)
        processors = LogitsProcessorList([] if sampler.passive else [SamplerLogitsProcessor(sampler)])
        tokens = stream_generate(self.model, inputs, config, processors)
        counted = [0]
        # usage counts text tokens only: an image is no prompt token
        return stream_with_stops(text_pieces(self.tokenizer, self.eos_ids, tokens, counted), request.sampling.stop,
                                 0, max_tokens, counted)
