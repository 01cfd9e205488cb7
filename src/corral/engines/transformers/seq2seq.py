"""Encoder-decoder models through transformers (T5, BART, Marian, mBART, M2M100 / NLLB): translate
and summarize, streamed. The input is prepared as the family expects: T5 reads a task prefix (from
its config's ``task_specific_params``, else ``translate English to French: `` / ``summarize: ``);
multilingual tokenizers (mBART, NLLB, M2M100) take the source language as ``src_lang`` and the
target language as the decoder's forced first token; a one-pair model (Marian) needs neither.
Decoding runs through the same sampler as the causal LMs (greedy unless the request samples)."""

from __future__ import annotations

import difflib
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
WIDELY_SPOKEN = (("en", "eng"), ("fr", "fra"), ("de", "deu"), ("es", "spa"), ("zh", "zho"), ("ar", "arb"),
                 ("ru", "rus"), ("pt", "por"), ("ja", "jpn"), ("hi", "hin"))  # ISO 639-1 / -3 codes


def language_codes(tokenizer: Any) -> list[str]:
    """The language codes a multilingual tokenizer takes as ``src_lang``: its ``lang_code_to_id``
    (mBART, M2M100), else its extra special tokens that are in the vocabulary (NLLB)."""
    by_code = getattr(tokenizer, "lang_code_to_id", None)
    if isinstance(by_code, dict) and by_code:
        return [str(code) for code in by_code]
    extra = getattr(tokenizer, "extra_special_tokens", None) or getattr(tokenizer, "additional_special_tokens", None)
    extra = list(extra.values()) if isinstance(extra, dict) else extra
    tokens = [str(t) for t in extra] if isinstance(extra, list | tuple) else []
    unknown = tokenizer.unk_token_id
    return [t for t in tokens if tokenizer.convert_tokens_to_ids(t) not in (None, unknown)]


def sample(codes: list[str], limit: int = 12) -> str:
    """Codes for an error message: all of a short list, else ``limit`` of them (widely spoken
    languages first, so that the spelling of the codes shows) and the count."""
    def rank(code: str) -> int:
        language = code.strip("_<>").split("_")[0].lower()
        return next((i for i, names in enumerate(WIDELY_SPOKEN) if language in names), len(WIDELY_SPOKEN))

    shown = ", ".join(sorted(codes, key=rank)[:limit])
    return shown if len(codes) <= limit else f"{shown}, ... ({len(codes)} in all)"


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
            codes = language_codes(self.tokenizer)
            if not request.source_lang or not request.target_lang:
                raise UsageError("this model translates between many languages: give the source and target "
                                 "languages as it names them (e.g. eng_Latn / fra_Latn, or en_XX / fr_XX)",
                                 f"its codes: {sample(codes)}" if codes else None)
            self._language_token(request.source_lang, codes, "source")  # checked before the tokenizer takes it
            forced = self._language_token(request.target_lang, codes, "target")
            self.tokenizer.src_lang = request.source_lang
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

    def _language_token(self, code: str, codes: list[str], role: str) -> int:
        """The token id of a language code the tokenizer knows; otherwise a UsageError naming the
        codes it does know. Without a list of codes, any token ``code``, ``__code__`` or ``<code>``."""
        by_code = getattr(self.tokenizer, "lang_code_to_id", None) or {}
        found: Any = None
        if not codes or code in codes:
            tokens = (code, f"__{code}__", f"<{code}>")
            ids = [by_code.get(code)] if by_code else [self.tokenizer.convert_tokens_to_ids(t) for t in tokens]
            found = next((i for i in ids if isinstance(i, int) and i != self.tokenizer.unk_token_id), None)
        if found is not None:
            return int(found)
        close = [c for c in codes if c.lower().startswith(code.lower()[:2])][:3] or difflib.get_close_matches(
            code, codes, n=3, cutoff=0.5)
        hint = (f"did you mean {' or '.join(close)}? " if close else "") + (
            f"its codes: {sample(codes)}" if codes else "use a language code from its tokenizer")
        raise UsageError(f"this model does not know the {role} language {code!r}", hint)

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
