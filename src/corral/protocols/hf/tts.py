"""Text-to-speech in the Hugging Face Inference API's shape: ``inputs`` is the text, the answer is
the audio file's bytes (``InferenceClient.text_to_speech`` returns them as they come): FLAC by
default, as the Inference API answers; ``parameters`` may name ``voice``, ``speed`` and
``response_format`` (wav, flac, mp3, opus, aac, pcm), e.g. through the client's ``extra_body``.
Generation parameters the client may send (``do_sample``, ``temperature``, ...) are ignored: no
local voice samples text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.audio import FORMATS, MEDIA_TYPES
from corral.errors import UsageError
from corral.protocols.openai.speech import audio_bytes, start_speech
from corral.speech import speak_request
from corral.wire import Binary

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

DEFAULT_FORMAT = "flac"


async def text_to_speech(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                         call: CallInfo) -> Binary:
    if not isinstance(inputs, str):
        raise UsageError("inputs must be the text to speak, a string")
    fmt = parameters.get("response_format") or parameters.get("format") or DEFAULT_FORMAT
    if fmt not in FORMATS:
        raise UsageError(f"parameters.response_format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    voice, speed = parameters.get("voice"), parameters.get("speed")
    speed = 1.0 if speed is None else speed
    if voice is not None and not isinstance(voice, str):
        raise UsageError("parameters.voice must be a string")
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise UsageError("parameters.speed must be a number")
    request = speak_request(inputs, voice, float(speed), runtime.settings.runtime.max_speech_chars)
    speech = await start_speech(runtime, model, request, call)
    return Binary(b"".join([piece async for piece in audio_bytes(speech, fmt)]), MEDIA_TYPES[fmt])
