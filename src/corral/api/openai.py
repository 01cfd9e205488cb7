"""OpenAI-compatible routes: translate bodies into tasks, hand them to the dispatcher, translate
results back. No engine is known here."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.chat_prep import prepare_chat
from corral.api.schemas import ChatCompletionBody, CompletionBody, EmbeddingBody, stop_tuple
from corral.api.sse import DONE, EventStream, event
from corral.errors import UsageError
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime
from corral.tasks import CompletionRequest, EmbedRequest, EmbedResult, Sampling, Task, TextChunk, Usage


def runtime(request: Request) -> Runtime:
    r: Runtime = request.app.state.runtime
    return r


def call_info(request: Request, route: str, prompt: str | None) -> CallInfo:
    client = f"{request.client.host}:{request.client.port}" if request.client else None
    return CallInfo(Door.OPENAI, route, client, prompt)


def usage_dict(u: Usage) -> dict[str, int]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


async def primed(stream: AsyncIterator[TextChunk]) -> AsyncIterator[TextChunk]:
    """Pull the first chunk now, so that errors (unknown model, full queue) become HTTP errors."""
    first = await anext(stream)

    async def rest() -> AsyncIterator[TextChunk]:
        try:
            yield first
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    return rest()


router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    rt = runtime(request)
    entries = await rt.list_models()
    data = [{"id": e.name, "object": "model", "created": int(e.created_at), "owned_by": "corral",
             "corral": {"tasks": e.info.tasks, "format": e.info.format, "source": e.source}} for e in entries]
    names = {e.name for e in entries}
    for alias, target in sorted(rt.settings.all_aliases().items()):
        if alias not in names:
            data.append({"id": alias, "object": "model", "created": 0, "owned_by": "corral",
                         "corral": {"alias_of": target}})
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionBody, request: Request) -> Response:
    prepared = prepare_chat(body)
    prompt = "\n".join(f"{m.role}: {m.content}" for m in prepared.request.messages)
    call = call_info(request, "/v1/chat/completions", prompt)
    rt = runtime(request)
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
                         "choices": [r.choice(i) for i, r in enumerate(results)], "usage": usage_dict(usage)})


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionBody, request: Request) -> Response:
    if body.echo or body.suffix:
        raise UsageError("echo and suffix are not supported", "leave them out")
    if body.logprobs:
        raise UsageError("logprobs on /v1/completions is not supported yet", "use /v1/chat/completions")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise UsageError("prompt must not be an empty list")
    rt = runtime(request)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    jobs: list[AsyncIterator[TextChunk]] = []
    for prompt in prompts:
        for k in range(body.n):
            seed = None if body.seed is None else body.seed + k
            sampling = Sampling(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                                seed=seed, stop=stop_tuple(body.stop))
            call = call_info(request, "/v1/completions", prompt)
            job = rt.run(Task.COMPLETE, body.model, CompletionRequest(prompt, sampling), call)
            jobs.append(await primed(job) if not jobs else job)
    head = {"id": rid, "object": "text_completion", "created": created, "model": body.model}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(_completion_events(jobs, head, include_usage))
    texts = await asyncio.gather(*(_collect(j) for j in jobs))
    usage = Usage(sum(t[1].prompt_tokens for t in texts[:: body.n]), sum(t[1].completion_tokens for t in texts))
    choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
               for i, (text, _, reason) in enumerate(texts)]
    return JSONResponse({**head, "choices": choices, "usage": usage_dict(usage)})


async def _collect(stream: AsyncIterator[TextChunk]) -> tuple[str, Usage, str]:
    parts, usage, reason = [], Usage(), "stop"
    async for chunk in stream:
        parts.append(chunk.text)
        if chunk.finish_reason:
            usage, reason = chunk.usage or Usage(), chunk.finish_reason
    return "".join(parts), usage, reason


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
            yield event({**head, "choices": [], "usage": usage_dict(total)})
        yield DONE
    finally:
        for job in jobs:
            await job.aclose()  # type: ignore[attr-defined]


@router.post("/v1/embeddings", response_model=None)
async def embeddings(body: EmbeddingBody, request: Request) -> Response:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or any(not isinstance(t, str) or not t for t in inputs):
        raise UsageError("input must be a non-empty string or a list of non-empty strings")
    if len(inputs) > 2048:
        raise UsageError("input may hold at most 2048 strings")
    result: EmbedResult = await runtime(request).call(Task.EMBED, body.model, EmbedRequest(tuple(inputs)),
                                                      call_info(request, "/v1/embeddings", None))
    vectors = np.asarray(np.stack([np.asarray(v, dtype=np.float32) for v in result.vectors]), dtype=np.float32)
    if body.dimensions is not None:
        if body.dimensions > vectors.shape[1]:
            raise UsageError(f"dimensions must be at most {vectors.shape[1]} for {body.model}")
        vectors = vectors[:, : body.dimensions]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64"
             else v} for i, v in enumerate(vectors)]
    payload = {"object": "list", "data": data, "model": body.model,
               "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens}}
    # orjson writes numpy rows directly: no per-float Python objects on the hot path
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
