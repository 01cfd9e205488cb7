"""Whisper through faster-whisper (CTranslate2): the fast CPU path. A CTranslate2 Whisper folder
(``model.bin``, ``config.json``, ``tokenizer.json``) loads with ``WhisperModel`` on the device asked
for (``cpu``, ``cuda[:N]``, or auto: CUDA when CTranslate2 sees a GPU) in the compute type of
``--dtype`` (``int8``, ``float16``, ``float32``, ...; default: as stored, converted by CTranslate2 to
what the device runs), refused when the device does not support it. Audio reaches it as a numpy
array at the feature extractor's rate (16 kHz), never as a file for it to decode. Its own
defaults stand (beam search of 5, the temperature fallback for a temperature of 0 as OpenAI
describes it); VAD is off (``vad_filter=False``); segment timestamps always, word timestamps when
asked (``word_timestamps``). The folder must ship ``tokenizer.json``: without it faster-whisper
would download one."""

from __future__ import annotations

import logging
from typing import Any

from corral.engines.base import Handler
from corral.engines.transcript import check_language, no_translation, span
from corral.errors import InvalidModelFileError, UsageError
from corral.tasks import TranscribeRequest, TranscribeResult, TranscriptSegment, Usage, Word

FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's and OpenAI's: temperature 0 rises on failure


def device_of(requested: str | None) -> tuple[str, int]:
    """(CTranslate2 device, index) for corral's device option."""
    if requested in (None, "auto"):
        import ctranslate2

        return ("cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"), 0
    base, _, index = requested.partition(":")
    if base not in ("cpu", "cuda"):
        raise UsageError(f"the faster_whisper engine runs on cpu or cuda, not {requested!r}",
                         "use --device cpu, cuda or cuda:N")
    if base == "cuda":
        import ctranslate2

        if ctranslate2.get_cuda_device_count() <= int(index or 0):
            raise UsageError(f"device {requested!r} was asked for but CTranslate2 sees no such CUDA device",
                             "drop --device or use --device cpu")
    return base, int(index or 0)


def compute_type_of(dtype: str | None, device: str) -> str:
    """The CTranslate2 compute type for ``--dtype`` on ``device``, refused when the device lacks it."""
    if dtype in (None, "auto"):
        return "default"
    import ctranslate2

    supported = sorted(ctranslate2.get_supported_compute_types(device))
    if dtype not in supported:
        raise UsageError(f"CTranslate2 cannot compute in {dtype} on {device}", f"use one of: {', '.join(supported)}")
    return dtype


class FasterWhisperHandler(Handler):
    engine = "faster_whisper"

    model: Any = None

    def load(self) -> None:
        if not (self.path / "tokenizer.json").is_file():
            raise InvalidModelFileError(f"{self.path} has no tokenizer.json",
                                        "faster-whisper would download one; add the model's tokenizer.json")
        from faster_whisper import WhisperModel

        import ctranslate2

        ctranslate2.set_log_level(logging.ERROR)  # not its warning that float16 runs as float32 on this CPU
        device, index = device_of(self.options.device)
        self.model = WhisperModel(str(self.path), device=device, device_index=index,
                                  compute_type=compute_type_of(self.options.dtype, device),
                                  cpu_threads=self.options.threads or 0, local_files_only=True)

    def unload(self) -> None:
        self.model = None

    def transcribe(self, request: TranscribeRequest) -> TranscribeResult:
        from corral.audio import resample

        model = self.model
        name = self.path.name
        if request.translate and not model.model.is_multilingual:
            raise no_translation(name, "it is an English-only Whisper model")
        audio = resample(request.audio, model.feature_extractor.sampling_rate)
        duration = audio.duration
        found, info = model.transcribe(
            audio.samples, language=check_language(name, request.language, model.supported_languages),
            task="translate" if request.translate else "transcribe",
            temperature=request.temperature if request.temperature > 0 else FALLBACK,
            initial_prompt=request.prompt or None, word_timestamps=request.timestamps == "word", vad_filter=False)
        segments = tuple(_segment(s, duration) for s in found)
        return TranscribeResult("".join(s.text for s in segments).strip(), info.language, duration, segments,
                                Usage(completion_tokens=sum(len(s.tokens) for s in segments)))


def _segment(s: Any, duration: float) -> TranscriptSegment:
    start, end = span(s.start, s.end, duration)
    words = tuple(Word(w.word, *span(w.start, w.end, duration), float(w.probability)) for w in s.words or ())
    return TranscriptSegment(start, end, s.text, words, tuple(s.tokens), int(s.seek), float(s.temperature or 0.0),
                             float(s.avg_logprob), float(s.compression_ratio), float(s.no_speech_prob))
