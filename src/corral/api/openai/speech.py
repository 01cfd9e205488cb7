"""POST /v1/audio/speech: ``protocols.openai.speech``, WAV and PCM streamed as synthesised (chunked),
the other formats encoded whole, or OpenAI's speech events with ``stream_format: "sse"``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from corral.api.common import call_info, runtime_of
from corral.api.sse import ClosingStream, EventStream, sse_events
from corral.protocols.openai.speech import STREAMED, SpeechBody, audio_bytes, media_type, open_speech, sse_audio
from corral.runtime.dispatcher import Door

router = APIRouter()
ROUTE = "/v1/audio/speech"


@router.post(ROUTE, response_model=None)
async def speech(body: SpeechBody, request: Request) -> Response:
    run = await open_speech(runtime_of(request), body, call_info(request, Door.OPENAI, ROUTE, prompt=body.input))
    fmt = body.response_format
    if body.stream_format == "sse":
        return EventStream(sse_events(sse_audio(run, fmt), done=False))
    if fmt in STREAMED:
        return ClosingStream(audio_bytes(run, fmt), media_type(fmt))
    return Response(b"".join([piece async for piece in audio_bytes(run, fmt)]), media_type=media_type(fmt))
