"""``POST /api/compare``: one chat on 2-6 models, streamed as NDJSON for the web UI's compare page,
measured by the same runtime call as `corral compare` (``Runtime.compare``). Lines: ``{"panel", "text"}``
for each piece of each model's answer as it arrives, then ``{"panel", "result"}`` per model (the
figures `corral compare --json` prints), then ``{"done": true}``. Every model is checked before any
work: an unknown one is a 404, one that cannot chat a 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from corral.api.common import runtime_of
from corral.errors import UsageError
from corral.runtime.compare import MAX_MODELS, MIN_MODELS, CompareOptions
from corral.runtime.dispatcher import Door, task_check
from corral.runtime.runtime import Runtime
from corral.tasks import DEFAULT_SAMPLING, ChatRequest, Message, Sampling, Task

router = APIRouter()


class CompareMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str]
    messages: list[CompareMessage] = Field(min_length=1)
    temperature: float = DEFAULT_SAMPLING.temperature
    top_p: float = DEFAULT_SAMPLING.top_p
    max_tokens: int = DEFAULT_SAMPLING.max_tokens
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    concurrent: bool = False
    repeat: int = Field(default=1, ge=1, le=20)


@router.post("/api/compare")
async def compare(body: CompareBody, request: Request) -> StreamingResponse:
    if not MIN_MODELS <= len(body.models) <= MAX_MODELS:
        raise UsageError(f"compare takes {MIN_MODELS} to {MAX_MODELS} models, not {len(body.models)}")
    rt = runtime_of(request)
    for name in body.models:
        await check_chat(rt, name)
    sampling = Sampling(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                        stop=tuple(body.stop)).check(str)
    chat = ChatRequest(tuple(Message(m.role, m.content) for m in body.messages), sampling=sampling)
    options = CompareOptions(concurrent=body.concurrent, repeat=body.repeat, door=Door.ADMIN)
    return StreamingResponse(_lines(rt, body.models, chat, options), media_type="application/x-ndjson")


async def check_chat(rt: Runtime, name: str) -> None:
    """A 404 for a name nothing serves, a 400 for a local model that cannot chat: before any work."""
    if rt.router.chain(name) is not None:
        return
    entry = await asyncio.to_thread(rt.resolver.resolve, name, progress=False)
    task_check(Task.CHAT, rt.engines)(entry)


async def _lines(rt: Runtime, names: list[str], chat: ChatRequest, options: CompareOptions) -> AsyncIterator[bytes]:
    pieces = asyncio.Queue[tuple[int, str]]()
    work = asyncio.create_task(rt.compare(names, chat, options, lambda i, text: pieces.put_nowait((i, text))))
    try:
        while not work.done() or not pieces.empty():
            getter = asyncio.ensure_future(pieces.get())
            await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                panel, text = getter.result()
                yield orjson.dumps({"panel": panel, "text": text}) + b"\n"
            else:
                getter.cancel()
        for panel, row in enumerate(work.result()):
            yield orjson.dumps({"panel": panel, "result": row.to_json()}) + b"\n"
        yield b'{"done":true}\n'
    finally:
        work.cancel()  # the client left: the answers still running stop
