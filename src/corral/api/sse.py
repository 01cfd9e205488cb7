"""Server-sent events: OpenAI's `data: {...}` lines and `data: [DONE]`, with the body iterator
always closed (so a client that goes away stops generation at once, not at garbage collection), an
error after the first event sent in band (a corral error as it is, any other as an internal error);
ClosingStream does the same for any streamed body (speech audio)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from corral.api.errors import error_body
from corral.errors import CorralError

log = logging.getLogger("corral.api")


def event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"


def typed_event(data: dict[str, Any]) -> str:
    """An event named by its ``type`` (``event: TYPE``), as the Anthropic and Responses streams frame them."""
    return f"event: {data['type']}\n{event(data)}"


async def sse_events(chunks: AsyncIterator[dict[str, Any]], *, done: bool = True) -> AsyncIterator[str]:
    """Each chunk as an event, then ``[DONE]`` (unless not ``done``: OpenAI's speech events end
    without it); the chunks are closed however this ends. A corral error once events have gone out
    (a remote target failing mid-answer) is sent in band, as OpenAI does: an ``{"error": ...}``
    event, then ``[DONE]``, so the client sees an incomplete answer as failed."""
    try:
        async for chunk in chunks:
            yield event(chunk)
    except CorralError as exc:
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        yield event(error_body(exc.http_status, message, code=type(exc).__name__))
    except Exception as exc:  # an engine that crashed mid-answer: logged with its stack, sent in band
        log.exception("a stream failed")
        yield event(error_body(500, f"internal error: {type(exc).__name__}", code="internal_error"))
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    if done:
        yield DONE


class ClosingStream(StreamingResponse):
    """A streamed body (chunked transfer) whose iterator is closed when the response ends, also
    when the client went away mid-stream."""

    def __init__(self, body: AsyncIterator[Any], media_type: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self._events = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]


class EventStream(ClosingStream):
    def __init__(self, events: AsyncIterator[str], headers: dict[str, str] | None = None) -> None:
        super().__init__(events, "text/event-stream",
                         {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})
