"""POST /v1/chat/completions: the body becomes ChatRequests (chat_prep), n choices run through the
runtime, chunks become OpenAI choices or SSE deltas."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.common import call_info, primed, runtime_of
from corral.api.openai.chat_prep import prepare_chat
from corral.api.openai.schemas import ChatCompletionBody
from corral.api.sse import EventStream
from corral.runtime.dispatcher import Door
from corral.tasks import Task, Usage
from corral.wire import usage_json

router = APIRouter()
ROUTE = "/v1/chat/completions"


@router.post(ROUTE, response_model=None)
async def chat_completions(body: ChatCompletionBody, request: Request) -> Response:
    prepared = prepare_chat(body)
    prompt = "\n".join(f"{m.role}: {m.content}" for m in prepared.request.messages)
    call = call_info(request, Door.OPENAI, ROUTE, prompt)
    rt = runtime_of(request)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    requests = [prepared.request_for(i) for i in range(body.n)]
    # only the first choice is primed: its errors are every choice's errors, and priming the others
    # would hold a model slot that the first one needs to finish
    streams = [rt.run(Task.CHAT, body.model, r, call) for r in requests]
    streams[0] = await primed(streams[0])
    head = {"id": rid, "created": created, "model": body.model, "system_fingerprint": "corral"}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(prepared.stream_events(streams, head, include_usage))
    results = await asyncio.gather(*(prepared.collect(s) for s in streams))
    usage = Usage(results[0].usage.prompt_tokens, sum(r.usage.completion_tokens for r in results))
    return JSONResponse({**head, "object": "chat.completion",
                         "choices": [r.choice(i) for i, r in enumerate(results)], "usage": usage_json(usage)})
