"""What every transcription engine shares: timestamps kept inside the audio (a model may place the
end of its last segment past the end of the clip; a random one anywhere), and the refusals of what
an engine cannot do (translate, a language it does not know), worded the same everywhere."""

from __future__ import annotations

from collections.abc import Sequence

from corral.errors import UsageError


def span(start: float | None, end: float | None, duration: float) -> tuple[float, float]:
    """(start, end) in seconds within [0, duration], start <= end; a missing end is the clip's end."""
    first = min(max(float(start or 0.0), 0.0), duration)
    last = duration if end is None else float(end)
    return first, min(max(last, first), duration)


def no_translation(model: str, why: str) -> UsageError:
    return UsageError(f"{model} cannot translate speech: {why}",
                      "use a multilingual Whisper model (e.g. whisper-base) for /v1/audio/translations")


def check_language(model: str, language: str | None, known: Sequence[str]) -> str | None:
    """``language`` as the engine names it (lower case), or a UsageError listing what it knows."""
    if language is None:
        return None
    code = language.strip().lower()
    if code not in known:
        raise UsageError(f"{model} does not know the language {language!r}",
                         f"use one of: {', '.join(known)}" if len(known) <= 120 else "use an ISO-639-1 code")
    return code
