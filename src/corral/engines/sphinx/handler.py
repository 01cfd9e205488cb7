"""CMU pocketsphinx: a Sphinx model folder (acoustic model, ``*.lm.bin`` language model, ``*.dict``
pronunciations; the wheel's own en-US model is ``pkg:pocketsphinx``). Audio goes in as 16-bit PCM at
the acoustic model's rate (16 kHz); pocketsphinx's voice-activity ``Segmenter`` cuts it into speech
segments (the transcript's segments, with their times), each decoded as one utterance; word times
come from the decoder's segmentation (``Decoder.seg()``, 100 frames per second), without the
silence and filler entries and the alternative-pronunciation marks (``live(2)``). One language, no
translation; a prompt and a temperature do not apply and are ignored. CPU only; one decoder,
one request at a time."""

from __future__ import annotations

import io
import re
from typing import Any

from corral.engines.base import Handler
from corral.engines.transcript import check_language, no_translation, span
from corral.errors import InvalidModelFileError, UsageError
from corral.tasks import TranscribeRequest, TranscribeResult, TranscriptSegment, Usage, Word

ALTERNATIVE = re.compile(r"\(\d+\)$")


def is_word(token: str) -> bool:
    """Whether a segmentation entry is a word (not <s>, </s>, <sil>, [NOISE], [SPEECH], ...)."""
    return bool(token) and token[0] not in "<[" and token != "++"


def whole_frames_closed(pcm: bytes, frame_bytes: int) -> bytes:
    """``pcm`` with one sample of silence added when it is a whole number of the segmenter's frames:
    pocketsphinx 5.1's ``Segmenter.segment`` closes speech still going at the end only on a short
    last frame, so speech running to the end of such audio was dropped (an empty transcript)."""
    return pcm + b"\0\0" if pcm and len(pcm) % frame_bytes == 0 else pcm


class SphinxHandler(Handler):
    engine = "pocketsphinx"

    decoder: Any = None
    language: str = "en"
    rate: int = 16000
    frame_rate: int = 100

    def load(self) -> None:
        from corral.models.inspect_speech import sphinx_files

        if self.options.device not in (None, "auto", "cpu"):
            raise UsageError(f"the pocketsphinx engine runs on the CPU only, not {self.options.device!r}",
                             "drop --device or use --device cpu")
        files = sphinx_files(self.path)
        if files is None:
            raise InvalidModelFileError(f"{self.path} is not a Sphinx model folder",
                                        "it needs an acoustic model folder, a *.lm.bin and a *.dict")
        from pocketsphinx import Decoder

        self.decoder = Decoder(hmm=str(files.acoustic), lm=str(files.language_model), dict=str(files.dictionary),
                               loglevel="FATAL")
        self.language = files.language
        self.rate = int(self.decoder.config["samprate"])
        self.frame_rate = int(self.decoder.config["frate"])

    def unload(self) -> None:
        self.decoder = None

    def transcribe(self, request: TranscribeRequest) -> TranscribeResult:
        from pocketsphinx import Segmenter

        from corral.audio import pcm16, resample

        name = self.path.name
        if request.translate:
            raise no_translation(name, f"pocketsphinx only recognises {self.language}")
        check_language(name, (request.language or self.language).split("-")[0], [self.language])
        audio = resample(request.audio, self.rate)
        duration = audio.duration
        segments = []
        segmenter = Segmenter(sample_rate=self.rate)
        for speech in segmenter.segment(io.BytesIO(whole_frames_closed(pcm16(audio.samples), segmenter.frame_bytes))):
            words = self._decode(speech.pcm, float(speech.start_time), duration)
            if words:
                start, end = span(speech.start_time, speech.end_time, duration)
                segments.append(TranscriptSegment(start, end, " ".join(w.text for w in words),
                                                  words if request.timestamps == "word" else ()))
        text = " ".join(s.text for s in segments)
        return TranscribeResult(text, self.language, duration, tuple(segments),
                                Usage(completion_tokens=len(text.split())))

    def _decode(self, pcm: bytes, offset: float, duration: float) -> tuple[Word, ...]:
        decoder = self.decoder
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return ()
        rate, logmath = self.frame_rate, decoder.get_logmath()
        return tuple(Word(ALTERNATIVE.sub("", s.word), *span(offset + s.start_frame / rate,
                                                                offset + (s.end_frame + 1) / rate, duration),
                          float(logmath.exp(s.prob)))
                     for s in decoder.seg() if is_word(s.word))
