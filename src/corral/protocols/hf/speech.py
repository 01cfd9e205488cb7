"""Automatic speech recognition in the Hugging Face Inference API's shape: ``inputs`` is the audio
(raw bytes: a body that is only the audio file; base64 text or a ``data:`` URL in JSON), decoded and
checked before any model (``corral.audio``); the answer is ``{"text"}``, with ``"chunks": [{"text",
"timestamp": [start, end]}]`` when ``parameters.return_timestamps`` asks (``true`` or
``"segment"``: one chunk per segment; ``"word"``: per word), as ``InferenceClient.
automatic_speech_recognition`` parses it. ``parameters`` may also name ``language``, ``task``
(transcribe or translate), ``prompt`` and ``temperature``, at the top or, as transformers'
pipeline takes them, in ``generate_kwargs``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.media import media_bytes
from corral.tasks import Task, TranscribeRequest, TranscribeResult

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

STAMPS = {None: "none", False: "none", True: "segment", "segment": "segment", "word": "word"}


def speech_request(audio: Any, parameters: dict[str, Any]) -> TranscribeRequest:
    """The transcription parameters of an HF-shaped request."""
    generate = parameters.get("generate_kwargs") or parameters.get("generation_parameters") or {}
    if not isinstance(generate, dict):
        raise UsageError("parameters.generate_kwargs must be an object")

    def get(name: str) -> Any:
        return parameters.get(name, generate.get(name))

    stamps = parameters.get("return_timestamps")
    if isinstance(stamps, list) or stamps not in STAMPS:
        raise UsageError("parameters.return_timestamps must be true, false, \"segment\" or \"word\"")
    task = get("task") or "transcribe"
    if task not in ("transcribe", "translate"):
        raise UsageError("parameters.task must be transcribe or translate")
    language, prompt, temperature = get("language"), get("prompt"), get("temperature") or 0.0
    if (language is not None and not isinstance(language, str)) or (prompt is not None and not isinstance(prompt, str)):
        raise UsageError("parameters.language and parameters.prompt must be strings")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
        raise UsageError("parameters.temperature must be a number from 0 to 1")
    from corral.protocols.openai.languages import language_code

    return TranscribeRequest(audio, language_code(language), prompt or None, task == "translate", STAMPS[stamps],
                             float(temperature))


async def automatic_speech_recognition(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                                       call: CallInfo) -> Any:
    from corral.audio import decode_audio

    if isinstance(inputs, list):
        raise UsageError("inputs must be one audio file")
    data = media_bytes(inputs, "audio")
    audio = await asyncio.to_thread(decode_audio, data, max_seconds=runtime.settings.runtime.max_audio_seconds)
    request = speech_request(audio, parameters)
    result: TranscribeResult = await runtime.call(Task.TRANSCRIBE, model, request, call)
    return speech_json(result, request.timestamps)


def speech_json(result: TranscribeResult, timestamps: str) -> dict[str, Any]:
    out: dict[str, Any] = {"text": result.text}
    if timestamps == "word":
        out["chunks"] = [{"text": w.text.strip(), "timestamp": [w.start, w.end]}
                         for s in result.segments for w in s.words]
    elif timestamps == "segment":
        out["chunks"] = [{"text": s.text.strip(), "timestamp": [s.start, s.end]} for s in result.segments]
    return out
