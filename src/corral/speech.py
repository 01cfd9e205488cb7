"""Speech requests checked the same way at every door (CLI, HTTP, sidecar), and the voice rule
every speech engine applies. The text: empty or only whitespace is 400, longer than
``[runtime].max_speech_chars`` is 413 (too large, like a body or an image over its limit); the
speed: 0.25 to 4.0, OpenAI's range (422, a bad parameter). A voice is one of the model's own
(:func:`choose_voice`, run by the engine, which knows its voices); OpenAI's voice names (``alloy``,
``echo``, ...) and ``default`` mean the model's default voice, so code written for OpenAI runs
unchanged; any other name is 400 listing the model's voices. No engine library is imported here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from corral.errors import CorralError, UsageError
from corral.media import MediaTooLargeError
from corral.media_tasks import AudioChunk, SpeakRequest
from corral.task_types import Usage

OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                           "verse", "marin", "cedar"})
DEFAULT = "default"
MIN_SPEED, MAX_SPEED = 0.25, 4.0
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


class SpeechInputError(CorralError):
    """Text that cannot be spoken (empty), or a voice the model does not have."""

    http_status = 400


def speak_request(text: str, voice: str | None, speed: float, max_chars: int) -> SpeakRequest:
    """The request for ``text``, checked before any model is touched."""
    if not text.strip():
        raise SpeechInputError("the text to speak is empty", "give the text as the input")
    if len(text) > max_chars:
        raise MediaTooLargeError(f"the text to speak is {len(text)} characters long; the limit is {max_chars}",
                                 "send a shorter text, in several requests (the server's --max-speech-chars)")
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise UsageError(f"speed must be from {MIN_SPEED} to {MAX_SPEED}, not {speed:g}",
                         "1.0 is the voice's own pace; 2.0 twice as fast")
    return SpeakRequest(text, voice or None, float(speed))


def fixed_pace(speed: float, family: str) -> None:
    """A 422 unless ``speed`` is 1.0, for a model (``family``) that has no speaking rate to set."""
    if speed != 1.0:
        raise UsageError(f"{family} speaks at its own pace; speed {speed:g} cannot be applied",
                         "leave speed at 1.0 for this model (VITS models, Piper voices and espeak-ng take a speed)")


def choose_voice(requested: str | None, voices: Sequence[str], default: str) -> str:
    """The model's voice ``requested`` names: itself (case aside), or ``default`` for no voice,
    ``default`` and OpenAI's names; a 400 listing ``voices`` otherwise."""
    if requested is None or requested.lower() in OPENAI_VOICES or requested.lower() == DEFAULT:
        return default
    if requested in voices:
        return requested
    folded = [v for v in voices if v.lower() == requested.lower()]
    if len(folded) == 1:
        return folded[0]
    raise SpeechInputError(f"this model has no voice {requested!r}; its voices: {', '.join(voices)}",
                           f"leave the voice out, or use one of these ({', '.join(sorted(OPENAI_VOICES))} "
                           "mean the default voice)")


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence's end mark (engines that speak sentence by sentence)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def last_chunk(sample_rate: int, text: str) -> AudioChunk:
    """The closing chunk of a speech stream: no samples, the usage (characters spoken)."""
    import numpy as np

    empty: Any = np.zeros(0, dtype=np.float32)
    return AudioChunk(empty, sample_rate, Usage(prompt_tokens=len(text)))
