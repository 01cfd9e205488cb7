"""Encoder-decoder models through transformers (T5, BART, Marian, mBART, M2M100 / NLLB): translate
and summarize, streamed. The input is prepared as the family expects: T5 reads a task prefix (from
its config's ``task_specific_params``, else ``translate English to French: `` / ``summarize: ``);
multilingual tokenizers (mBART, NLLB, M2M100) take the source language as ``src_lang`` and the
target language as the decoder's forced first token; a one-pair model (Marian) needs neither.
Decoding runs through the same sampler as the causal LMs (greedy unless the request samples)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from corral.engines.streaming import stream_with_stops, tokens_to_generate
from corral.engines.transformers.generate import stream_generate, text_pieces
from corral.engines.transformers.lm import end_of_sequence_ids, pad_token_id
from corral.engines.transformers.loading import TorchTaskHandler
from corral.engines.transformers.sampling import RequestSampler, SamplerLogitsProcessor
from corral.errors import UsageError
from corral.tasks import Generation, SummarizeRequest, TextChunk, TranslateRequest

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian", "es": "Spanish",
                  "it": "Italian", "pt": "Portuguese", "nl": "Dutch"}


class Seq2SeqHandler(TorchTaskHandler):
    auto_class = "AutoModelForSeq2SeqLM"

    def loaded(self) -> None:
        self.max_input = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 4096)
        self.eos_ids = end_of_sequence_ids(self.model, self.tokenizer)
        self.params: dict[str, Any] = getattr(self.model.config, "task_specific_params", None) or {}

    def translate(self, request: TranslateRequest) -> Iterator[TextChunk]:
        text, forced = request.text, None
        if self.model.config.model_type == "t5":
            text = self._t5_prefix(request) + text
        elif hasattr(self.tokenizer, "src_lang"):  # a multilingual tokenizer: languages as codes
            if not request.source_lang or not request.target_lang:
                raise UsageError("this model translates between many languages: give the source and target "
                                 "languages as it names them (e.g. eng_Latn / fra_Latn, or en_XX / fr_XX)")
            self.tokenizer.src_lang = request.source_lang
            forced = self._language_token(request.target_lang)
        return self._generate(text, request, forced)

    def summarize(self, request: SummarizeRequest) -> Iterator[TextChunk]:
        prefix = ""
        if self.model.config.model_type in ("t5", "mt5"):
            prefix = str(self.params.get("summarization", {}).get("prefix", "summarize: "))
        return self._generate(prefix + request.text, request, None)

    def _t5_prefix(self, request: TranslateRequest) -> str:
        source = LANGUAGE_NAMES.get(request.source_lang or "en", request.source_lang or "English")
        target = LANGUAGE_NAMES.get(request.target_lang or "", request.target_lang or "")
        if not target:
            pairs = [k for k in self.params if k.startswith("translation_")]
            if not pairs:
                raise UsageError("give the target language (e.g. French)")
            return str(self.params[pairs[0]].get("prefix", ""))
        return f"translate {source} to {target}: "

    def _language_token(self, code: str) -> int:
        unknown = self.tokenizer.unk_token_id
        for token in (code, f"__{code}__", f"<{code}>"):
            found = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(found, int) and found != unknown:
                return found
        raise UsageError(f"this model does not know the language {code!r}", "use a code from its tokenizer")

    def _generate(self, text: str, request: Generation, forced: int | None) -> Iterator[TextChunk]:
        from transformers import GenerationConfig, LogitsProcessorList

        features = self.tokenizer(text, truncation=True, max_length=self.max_input, return_tensors="pt")
        n_prompt = int(features["input_ids"].shape[1])
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 512)
        max_tokens = tokens_to_generate(1, limit, request.sampling.max_tokens)  # the start token takes a position
        sampler = RequestSampler(request.sampling, None, self.device, None)
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False, max_new_tokens=max_tokens, eos_token_id=self.eos_ids, forced_bos_token_id=forced,
            pad_token_id=pad_token_id(self.tokenizer, self.eos_ids),
            decoder_start_token_id=self.model.config.decoder_start_token_id)
        processors = LogitsProcessorList([] if sampler.passive else [SamplerLogitsProcessor(sampler)])
        tokens = stream_generate(self.model, dict(features.to(self.device)), config, processors)
        counted = [0]
        pieces = text_pieces(self.tokenizer, self.eos_ids, tokens, counted)
        return stream_with_stops(pieces, request.sampling.stop, n_prompt, max_tokens, counted)
