"""POST /v1/chat/completions: the OpenAI chat of ``protocols.openai.chat``, as JSON or SSE."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.common import call_info, runtime_of, trace_headers
from corral.api.sse import EventStream, sse_events
from corral.protocols.openai.chat import start_chat
from corral.protocols.openai.schemas import ChatCompletionBody
from corral.runtime.dispatcher import Door

router = APIRouter()
ROUTE = "/v1/chat/completions"


@router.post(ROUTE, response_model=None)
async def chat_completions(body: ChatCompletionBody, request: Request) -> Response:
    started, call = time.perf_counter(), call_info(request, Door.OPENAI, ROUTE)
    run = await start_chat(runtime_of(request), body, call)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(sse_events(run.chunks(include_usage)), trace_headers(call.trace))
    answer = await run.response()
    return JSONResponse(answer, headers=trace_headers(call.trace, started))
