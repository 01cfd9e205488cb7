"""Speech recognition through transformers: Whisper-family and other speech encoder-decoders
(``AutoModelForSpeechSeq2Seq``) and CTC models (``*ForCTC``: wav2vec2, HuBERT, ...), run by
transformers' public ``automatic-speech-recognition`` pipeline built from the loaded model, its
tokenizer and its feature extractor. Audio is handed over as a numpy array already at the feature
extractor's rate (resampled by :func:`corral.audio.resample`), so the pipeline never decodes a
file or calls ffmpeg or torchaudio. Audio longer than the feature extractor's window (30 s for
Whisper) is chunked (``chunk_length_s``). Whisper takes ``language`` and ``task="translate"``
through ``generate_kwargs`` (checked against the model's generation config), the prompt as
``prompt_ids`` and a temperature above 0 as sampling; CTC models ignore a language, a prompt and a
temperature and cannot translate. Timestamps: Whisper segments (``return_timestamps=True``) or
words (``"word"``, cross-attention alignment); CTC words from the character offsets; word
timestamps come as one segment holding the words. Times are kept inside the clip."""

from __future__ import annotations

from typing import Any

from corral.engines.table import EngineSpec
from corral.engines.transcript import check_language, no_translation, span
from corral.engines.transformers.loading import TorchTaskHandler
from corral.tasks import TranscribeRequest, TranscribeResult, TranscriptSegment, Word

CHUNK_SECONDS = 30.0  # longer audio is chunked (Whisper's window; CTC attention grows with the square)


class SpeechRecognizerHandler(TorchTaskHandler):
    auto_class = "AutoModelForSpeechSeq2Seq"

    pipe: Any = None
    feature_extractor: Any = None

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        super().import_libraries(spec)
        import transformers.pipelines  # noqa: F401  (its import would count as the first model's memory)

    def model_class(self) -> str:
        return "AutoModelForCTC" if (self.info.architecture or "").endswith("ForCTC") else self.auto_class

    def loaded(self) -> None:
        import transformers

        self.feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(  # type: ignore[no-untyped-call]
            str(self.path), trust_remote_code=self.options.trust.trust_remote_code)
        self.pipe = transformers.pipeline("automatic-speech-recognition", model=self.model, tokenizer=self.tokenizer,
                                          feature_extractor=self.feature_extractor, device=self.device)

    def unload(self) -> None:
        self.pipe = self.feature_extractor = None
        super().unload()

    @property
    def is_whisper(self) -> bool:
        return str(self.pipe.type) == "seq2seq_whisper"

    def transcribe(self, request: TranscribeRequest) -> TranscribeResult:
        from corral.audio import resample

        audio = resample(request.audio, int(self.feature_extractor.sampling_rate))
        duration = audio.duration
        options = self.pipeline_options(request, duration)
        out = self.pipe(audio.samples.copy(), **options)
        chunks = [(str(c["text"]), *span(c["timestamp"][0], c["timestamp"][1], duration))
                  for c in out.get("chunks") or []]
        text = str(out["text"]).strip()
        segments: tuple[TranscriptSegment, ...]
        if request.timestamps == "word" or (request.timestamps == "segment" and not self.is_whisper):
            words = tuple(Word(word.strip(), start, end) for word, start, end in chunks)
            first, last = (words[0].start, words[-1].end) if words else (0.0, duration)
            kept = words if request.timestamps == "word" else ()
            segments = (TranscriptSegment(first, last, text, kept),) if text else ()
        else:
            segments = tuple(TranscriptSegment(start, end, piece) for piece, start, end in chunks)
        return TranscribeResult(text, request.language, duration, segments)

    def pipeline_options(self, request: TranscribeRequest, duration: float) -> dict[str, Any]:
        """The pipeline's keyword arguments for ``request`` (also what a by-hand call would pass)."""
        options: dict[str, Any] = {}
        if request.timestamps != "none":
            options["return_timestamps"] = True if request.timestamps == "segment" and self.is_whisper else "word"
        window = float(getattr(self.feature_extractor, "chunk_length", None) or CHUNK_SECONDS)
        if duration > window:
            options["chunk_length_s"] = window
        if self.is_whisper:
            generate = self._whisper_options(request)
            if generate:
                options["generate_kwargs"] = generate
        elif request.translate:
            raise no_translation(self.path.name, "only Whisper models translate")
        return options

    def _whisper_options(self, request: TranscribeRequest) -> dict[str, Any]:
        name = self.path.name
        config = self.model.generation_config
        languages = [k.strip("<|>") for k in (getattr(config, "lang_to_id", None) or {})]
        tasks = getattr(config, "task_to_id", None) or {}
        generate: dict[str, Any] = {}
        if request.language is not None:
            code = check_language(name, request.language, languages or ["en"])
            if languages:
                generate["language"] = code
        if request.translate:
            if "translate" not in tasks:
                raise no_translation(name, "its generation config has no translate task (an English-only model)")
            generate["task"] = "translate"
        if request.prompt:
            generate["prompt_ids"] = self.tokenizer.get_prompt_ids(request.prompt, return_tensors="pt").to(self.device)
        if request.temperature > 0:
            generate.update(do_sample=True, temperature=request.temperature)
        return generate
