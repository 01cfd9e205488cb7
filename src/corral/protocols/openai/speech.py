"""OpenAI's speech API (``POST /v1/audio/speech``) in corral's terms, transport-free: the body
checked into a :class:`~corral.tasks.SpeakRequest`, the synthesis started and its first chunk
pulled (so a bad voice or a missing model is an HTTP status, not a broken stream), then the audio
as bytes. WAV and PCM stream as they are synthesised (a WAV header for a stream of unknown
length, then 16-bit samples; PCM is OpenAI's 24 kHz 16-bit mono, resampled as a stream); MP3,
Opus, AAC and FLAC are encoded whole once synthesis ends. ``stream_format: "sse"`` sends the same
bytes base64-encoded as ``speech.audio.delta`` events, then ``speech.audio.done`` with the usage.
``instructions`` is accepted and ignored (no local voice takes them). The sidecar's ``speak``
uses :class:`Speech` too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from corral.audio import MEDIA_TYPES, PcmStream, encode_audio, pcm16, wav_header
from corral.media_tasks import Audio
from corral.protocols.openai.schemas import _Body
from corral.speech import MAX_SPEED, MIN_SPEED, speak_request
from corral.tasks import AudioChunk, SpeakRequest, Task, Usage

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

Format = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
STREAMED = ("wav", "pcm")


class VoiceId(_Body):
    id: str = Field(min_length=1, max_length=200)


class SpeechBody(_Body):
    model: str = Field(min_length=1, max_length=300)
    input: str
    voice: str | VoiceId | None = None
    instructions: str | None = None  # accepted, ignored
    response_format: Format = "mp3"  # OpenAI's default
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    stream_format: Literal["audio", "sse"] = "audio"

    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice


@dataclass
class Speech:
    """One synthesis in flight: its first chunk already pulled, the rest as they come."""

    first: AudioChunk
    rest: AsyncIterator[AudioChunk]
    usage: Usage = field(default_factory=Usage)

    @property
    def sample_rate(self) -> int:
        return self.first.sample_rate

    async def chunks(self) -> AsyncGenerator[AudioChunk, None]:
        """Every chunk, the usage noted from the last; the engine's stream is closed however this ends."""
        try:
            chunk: AudioChunk | None = self.first
            while chunk is not None:
                if chunk.usage is not None:
                    self.usage = chunk.usage
                yield chunk
                chunk = await anext(self.rest, None)
        finally:
            await self.close()

    async def close(self) -> None:
        await self.rest.aclose()  # type: ignore[attr-defined]

    async def whole(self) -> Audio:
        import numpy as np

        parts = [c.samples async for c in self.chunks()]
        return Audio(np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32),
                     self.sample_rate)


async def start_speech(runtime: Runtime, model: str, request: SpeakRequest, call: CallInfo) -> Speech:
    """The synthesis of ``request``: started, its first chunk in hand."""
    stream = runtime.run(Task.SPEAK, model, request, call)
    try:
        first = await anext(stream)
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise
    return Speech(first, stream)


async def open_speech(runtime: Runtime, body: SpeechBody, call: CallInfo) -> Speech:
    """The synthesis ``body`` asks for, its text, voice and speed checked first."""
    request = speak_request(body.input, body.voice_name(), body.speed, runtime.settings.runtime.max_speech_chars)
    return await start_speech(runtime, body.model, request, call)


async def audio_bytes(speech: Speech, fmt: str) -> AsyncIterator[bytes]:
    """The audio as ``fmt``: streamed for WAV and PCM, one encoded piece for the rest. Closing
    this (a client gone) closes the synthesis."""
    try:
        if fmt not in STREAMED:
            audio = await speech.whole()
            yield await asyncio.to_thread(encode_audio, audio, fmt)
        elif fmt == "wav":
            yield wav_header(speech.sample_rate)
            async for chunk in speech.chunks():
                if len(chunk.samples):
                    yield pcm16(chunk.samples)
        else:
            pcm = PcmStream(speech.sample_rate)
            async for chunk in speech.chunks():
                if len(chunk.samples):
                    yield pcm.feed(chunk.samples)
            yield pcm.end()
    finally:
        await speech.close()


async def sse_audio(speech: Speech, fmt: str) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's speech events: the audio's bytes as base64 deltas, then done with the usage."""
    import base64

    async for piece in audio_bytes(speech, fmt):
        if piece:
            yield {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
    usage = speech.usage
    yield {"type": "speech.audio.done", "usage": {"input_tokens": usage.prompt_tokens,
                                                  "output_tokens": usage.completion_tokens,
                                                  "total_tokens": usage.total_tokens}}


def media_type(fmt: str) -> str:
    return MEDIA_TYPES[fmt]
