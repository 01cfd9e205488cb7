"""Anthropic's Messages API: ``POST /v1/messages`` (a ``message`` object, or SSE with the Messages
events when ``stream``) and ``POST /v1/messages/count_tokens``, over the same runtime as every door
(logged with door ``anthropic``). ``x-api-key`` is accepted beside bearer keys (:mod:`.guard`);
errors are Anthropic's ``{"type": "error", "error": {...}}`` (:mod:`.errors`), in band once a stream
has begun."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.common import call_info, runtime_of, trace_headers
from corral.api.errors import anthropic_error
from corral.api.sse import EventStream, typed_event
from corral.errors import CorralError
from corral.protocols.anthropic.messages import chat_body, events, message
from corral.protocols.anthropic.schemas import CountTokensBody, MessagesBody
from corral.protocols.openai.chat import start_chat
from corral.runtime.dispatcher import Door

log = logging.getLogger("corral.api")
router = APIRouter()
ROUTE = "/v1/messages"


async def _sse(items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Each event as ``event: TYPE`` + ``data: JSON``; a failure after the start as an ``error`` event."""
    try:
        async for item in items:
            yield typed_event(item)
    except CorralError as exc:
        body = anthropic_error(exc.http_status, exc.message + (f" ({exc.hint})" if exc.hint else ""))
        yield typed_event(body)
    except Exception as exc:
        log.exception("a Messages stream failed")
        yield typed_event(anthropic_error(500, f"internal error: {type(exc).__name__}"))
    finally:
        await items.aclose()  # type: ignore[attr-defined]


@router.post(ROUTE, response_model=None)
async def messages(body: MessagesBody, request: Request) -> Response:
    call = call_info(request, Door.ANTHROPIC, ROUTE)
    run = await start_chat(runtime_of(request), chat_body(body, max_tokens=body.max_tokens,
                                                          stream=body.stream), call)
    if body.stream:
        return EventStream(_sse(events(run.chunks(True), body.model)), trace_headers(call.trace))
    return JSONResponse(message(await run.response(), body.model), headers=trace_headers(call.trace))


@router.post(ROUTE + "/count_tokens")
async def count_tokens(body: CountTokensBody, request: Request) -> dict[str, int]:
    """The prompt's tokens as the model's engine counts them after its chat template: the prompt is
    read by the model once (one token generated and dropped)."""
    call = call_info(request, Door.ANTHROPIC, ROUTE + "/count_tokens")
    run = await start_chat(runtime_of(request), chat_body(body, max_tokens=1, stream=False), call)
    answer = await run.response()
    return {"input_tokens": int(answer["usage"]["prompt_tokens"])}
