"""Server-sent events: OpenAI's `data: {...}` lines and `data: [DONE]`, with the body iterator
always closed (so a client that goes away stops generation at once, not at garbage collection)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


def event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"


async def sse_events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Each chunk as an event, then ``[DONE]``; the chunks are closed however this ends."""
    try:
        async for chunk in chunks:
            yield event(chunk)
        yield DONE
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class EventStream(StreamingResponse):
    def __init__(self, events: AsyncIterator[str]) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]
