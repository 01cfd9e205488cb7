"""POST /v1/completions: prompts (one or a list, n each) run as completion tasks; text choices or
SSE chunks back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.common import call_info, primed, runtime_of
from corral.api.openai.schemas import CompletionBody, stop_tuple
from corral.api.sse import DONE, EventStream, event
from corral.errors import UsageError
from corral.runtime.dispatcher import Door
from corral.tasks import CompletionRequest, Sampling, Task, TextChunk, Usage
from corral.wire import acollect, usage_json

router = APIRouter()
ROUTE = "/v1/completions"


@router.post(ROUTE, response_model=None)
async def completions(body: CompletionBody, request: Request) -> Response:
    if body.echo or body.suffix:
        raise UsageError("echo and suffix are not supported", "leave them out")
    if body.logprobs:
        raise UsageError("logprobs on /v1/completions is not supported yet", "use /v1/chat/completions")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise UsageError("prompt must not be an empty list")
    rt = runtime_of(request)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    jobs: list[AsyncIterator[TextChunk]] = []
    for prompt in prompts:
        for k in range(body.n):
            seed = None if body.seed is None else body.seed + k
            sampling = Sampling(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                                seed=seed, stop=stop_tuple(body.stop))
            call = call_info(request, Door.OPENAI, ROUTE, prompt)
            job = rt.run(Task.COMPLETE, body.model, CompletionRequest(prompt, sampling=sampling), call)
            jobs.append(await primed(job) if not jobs else job)
    head = {"id": rid, "object": "text_completion", "created": created, "model": body.model}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(_completion_events(jobs, head, include_usage))
    texts = await asyncio.gather(*(acollect(j) for j in jobs))
    usage = Usage(sum(t.usage.prompt_tokens for t in texts[:: body.n]), sum(t.usage.completion_tokens for t in texts))
    choices = [{"index": i, "text": t.text, "logprobs": None, "finish_reason": t.finish_reason}
               for i, t in enumerate(texts)]
    return JSONResponse({**head, "choices": choices, "usage": usage_json(usage)})


async def _completion_events(jobs: list[AsyncIterator[TextChunk]], head: dict[str, Any],
                             include_usage: bool) -> AsyncIterator[str]:
    total = Usage()
    try:
        for index, job in enumerate(jobs):
            async for chunk in job:
                if chunk.text or chunk.finish_reason:
                    yield event({**head, "choices": [{"index": index, "text": chunk.text, "logprobs": None,
                                                      "finish_reason": chunk.finish_reason}]})
                if chunk.usage:
                    total = Usage(total.prompt_tokens + chunk.usage.prompt_tokens,
                                  total.completion_tokens + chunk.usage.completion_tokens)
        if include_usage:
            yield event({**head, "choices": [], "usage": usage_json(total)})
        yield DONE
    finally:
        for job in jobs:
            await job.aclose()  # type: ignore[attr-defined]
