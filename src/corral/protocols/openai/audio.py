"""OpenAI's speech-to-text endpoints in corral's terms, transport-free: ``/v1/audio/transcriptions``
and ``/v1/audio/translations`` (into English). The form's fields are checked (``model``,
``language`` as an ISO-639-1 code or an English name, ``prompt``, ``temperature`` 0 to 1,
``response_format`` json / text / srt / vtt / verbose_json, ``timestamp_granularities[]`` segment
and/or word, used by verbose_json), the uploaded file decoded and checked before any model is
touched (``corral.audio``: empty, not audio, truncated, an unsupported codec: 400; longer than the
limit: 413), one runtime call, and the answer rendered in the format asked for: ``{"text",
"usage"}``, the plain text, SubRip or WebVTT subtitles (one cue per segment), or verbose_json
(task, language name, duration, text, segments with Whisper's decoding figures, words). The CLI
renders with the same functions."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.media import BadMediaError
from corral.protocols.openai.languages import language_code, language_name
from corral.tasks import Task, TranscribeRequest, TranscribeResult, TranscriptSegment

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain; charset=utf-8",
               "srt": "text/plain; charset=utf-8", "vtt": "text/vtt; charset=utf-8"}
MAX_PROMPT = 4096


@dataclass(frozen=True)
class SpeechForm:
    """The text fields of a transcription or translation form, checked."""

    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    timestamp_granularities: tuple[str, ...] = ()
    translate: bool = False

    @classmethod
    def parse(cls, fields: Mapping[str, str], granularities: Sequence[str], *, translate: bool) -> SpeechForm:
        model = (fields.get("model") or "").strip()
        if not model:
            raise UsageError("model is required", "name a speech recognition model, e.g. whisper-base")
        fmt = (fields.get("response_format") or "json").strip()
        if fmt not in RESPONSE_FORMATS:
            raise UsageError(f"response_format must be one of: {', '.join(RESPONSE_FORMATS)}")
        wrong = [g for g in granularities if g not in GRANULARITIES]
        if wrong:
            raise UsageError(f"timestamp_granularities[] takes {' and '.join(GRANULARITIES)}, not {wrong[0]!r}")
        prompt = fields.get("prompt") or None
        if prompt is not None and len(prompt) > MAX_PROMPT:
            raise UsageError(f"prompt is longer than {MAX_PROMPT} characters")
        language = None if translate else language_code(fields.get("language"))
        return cls(model, language, prompt, fmt, _temperature(fields.get("temperature")),
                   tuple(dict.fromkeys(granularities)), translate)

    @property
    def timestamps(self) -> str:
        """What to ask the engine for: words, segments or neither, by what the format shows."""
        if self.response_format == "verbose_json":
            return "word" if "word" in self.timestamp_granularities else "segment"
        return "segment" if self.response_format in ("srt", "vtt") else "none"


def _temperature(value: str | None) -> float:
    if value is None or not value.strip():
        return 0.0
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"temperature must be a number from 0 to 1, not {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise UsageError("temperature must be from 0 to 1")
    return number


@dataclass(frozen=True)
class Answer:
    body: str | dict[str, Any]  # text, or a JSON object
    media_type: str


async def create_transcription(runtime: Runtime, form: SpeechForm, data: bytes, call: CallInfo) -> Answer:
    """Decode and check ``data``, transcribe (or translate) it, render the format the form asks for."""
    from corral.audio import decode_audio

    if not data:
        raise BadMediaError("the audio file is empty", "send the file's bytes in the form's file field")
    audio = await asyncio.to_thread(decode_audio, data, max_seconds=runtime.settings.runtime.max_audio_seconds)
    request = TranscribeRequest(audio, form.language, form.prompt, form.translate, form.timestamps, form.temperature)
    result: TranscribeResult = await runtime.call(Task.TRANSCRIBE, form.model, request, call)
    return render(result, form)


def render(result: TranscribeResult, form: SpeechForm) -> Answer:
    fmt = form.response_format
    if fmt == "text":
        body: str | dict[str, Any] = result.text + "\n"
    elif fmt == "srt":
        body = srt(result)
    elif fmt == "vtt":
        body = vtt(result)
    elif fmt == "verbose_json":
        body = verbose_json(result, form.timestamp_granularities, "translate" if form.translate else "transcribe")
    else:
        body = {"text": result.text, "usage": usage(result)}
    return Answer(body, MEDIA_TYPES[fmt])


def usage(result: TranscribeResult) -> dict[str, Any]:
    """OpenAI's usage of a Whisper transcription: the seconds of audio, rounded up."""
    return {"type": "duration", "seconds": math.ceil(result.duration)}


def verbose_json(result: TranscribeResult, granularities: Sequence[str] = (),
                 task: str = "transcribe") -> dict[str, Any]:
    """OpenAI's verbose_json: segments unless only words were asked for, words when they were."""
    out: dict[str, Any] = {"task": task, "language": language_name(result.language) or "unknown",
                           "duration": result.duration, "text": result.text}
    if "segment" in granularities or not granularities:
        out["segments"] = [segment_json(i, s) for i, s in enumerate(result.segments)]
    if "word" in granularities:
        out["words"] = [{"word": w.text.strip(), "start": w.start, "end": w.end}
                        for s in result.segments for w in s.words]
    out["usage"] = usage(result)
    return out


def segment_json(index: int, s: TranscriptSegment) -> dict[str, Any]:
    return {"id": index, "seek": s.seek or 0, "start": s.start, "end": s.end, "text": s.text,
            "tokens": list(s.tokens), "temperature": s.temperature or 0.0, "avg_logprob": s.avg_logprob or 0.0,
            "compression_ratio": s.compression_ratio or 0.0, "no_speech_prob": s.no_speech_prob or 0.0}


def cues(result: TranscribeResult) -> list[tuple[float, float, str]]:
    """(start, end, text) per subtitle: the segments, or the whole clip when there are none."""
    found = [(s.start, s.end, s.text.strip()) for s in result.segments if s.text.strip()]
    return found or ([(0.0, result.duration, result.text)] if result.text else [])


def clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def srt(result: TranscribeResult) -> str:
    return "".join(f"{i}\n{clock(a, ',')} --> {clock(b, ',')}\n{text}\n\n"
                   for i, (a, b, text) in enumerate(cues(result), start=1))


def vtt(result: TranscribeResult) -> str:
    return "WEBVTT\n\n" + "".join(f"{clock(a, '.')} --> {clock(b, '.')}\n{text}\n\n" for a, b, text in cues(result))
