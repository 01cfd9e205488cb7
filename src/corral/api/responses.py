"""OpenAI's Responses API: ``POST /v1/responses`` (a ``response`` object, or SSE with the typed
Responses events when ``stream``), over the same runtime as every door (logged with door
``responses``). Nothing is stored: ``store`` is accepted and reported false."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.common import call_info, runtime_of, trace_headers
from corral.api.sse import EventStream
from corral.protocols.openai.chat import start_chat
from corral.protocols.responses.run import chat_body, events, response
from corral.protocols.responses.schemas import ResponsesBody
from corral.runtime.dispatcher import Door

log = logging.getLogger("corral.api")
router = APIRouter()
ROUTE = "/v1/responses"


async def _sse(items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    try:
        async for item in items:
            yield f"event: {item['type']}\ndata: {json.dumps(item, separators=(',', ':'))}\n\n"
    except Exception as exc:  # not a corral error (events() turns those into response.failed)
        log.exception("a Responses stream failed")
        failure = {"type": "error", "code": "server_error", "message": f"internal error: {type(exc).__name__}",
                   "param": None, "sequence_number": 0}
        yield f"event: error\ndata: {json.dumps(failure)}\n\n"
    finally:
        await items.aclose()  # type: ignore[attr-defined]


@router.post(ROUTE, response_model=None)
async def create(body: ResponsesBody, request: Request) -> Response:
    call = call_info(request, Door.RESPONSES, ROUTE)
    run = await start_chat(runtime_of(request), chat_body(body), call)
    if body.stream:
        return EventStream(_sse(events(body, run.chunks(True))), trace_headers(call.trace))
    return JSONResponse(response(body, await run.response()), headers=trace_headers(call.trace))
