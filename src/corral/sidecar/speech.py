"""The sidecar's ``speak`` method: OpenAI's speech fields (``model``, ``input``, ``voice``,
``speed``, ``response_format``: wav by default here) through ``protocols.openai.speech``, as
``POST /v1/audio/speech`` takes them. The answer holds the whole audio, base64-encoded, with its
format, sample rate, duration and usage. With ``stream: true`` each synthesised piece is first
sent as a ``stream/delta`` notification: ``{"audio": base64 16-bit little-endian mono PCM,
"sample_rate": N}``, at the model's own rate, in order. A cancel closes the synthesis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import TYPE_CHECKING, Any

from corral.audio import PCM_RATE, encode_audio, pcm16
from corral.media_tasks import Audio
from corral.protocols.openai.speech import Format, SpeechBody, open_speech
from corral.wire import usage_json

if TYPE_CHECKING:
    from corral.sidecar.methods import Session


class SpeakParams(SpeechBody):
    response_format: Format = "wav"
    stream: bool = False


async def speak(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    p = SpeakParams.model_validate(params)
    speech = await open_speech(session.runtime, p, session.call("speak"))
    parts: list[Any] = []
    async with contextlib.aclosing(speech.chunks()) as chunks:
        async for chunk in chunks:
            if not len(chunk.samples):
                continue
            parts.append(chunk.samples)
            if p.stream:
                session.notify("stream/delta", {"requestId": session.request_id, "chunk": {
                    "audio": base64.b64encode(pcm16(chunk.samples)).decode(), "sample_rate": chunk.sample_rate}})
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    audio = Audio(samples, speech.sample_rate)
    data = await asyncio.to_thread(encode_audio, audio, p.response_format)
    return {"audio": base64.b64encode(data).decode(), "format": p.response_format,
            "sample_rate": PCM_RATE if p.response_format == "pcm" else audio.sample_rate,
            "duration": round(audio.duration, 4), "usage": usage_json(speech.usage)}
