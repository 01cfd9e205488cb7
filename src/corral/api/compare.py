"""``POST /api/compare``: one chat on 2-6 models, streamed as NDJSON for the web UI's compare page,
measured by the same runtime call as `corral compare` (``Runtime.compare``). Lines: ``{"panel", "text"}``
for each piece of each model's answer as it arrives, then ``{"panel", "result"}`` per model (the
figures `corral compare --json` prints), then ``{"done": true}``. Every model is checked before any
work: an unknown one is a 404, one that cannot chat a 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from corral.api.common import runtime_of
from corral.api.progress import drain
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


class PanelSettings(BaseModel):
    """One model's own settings, over the shared ones."""

    model_config = ConfigDict(extra="forbid")
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None


class VoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str]
    winner: str  # one of the models, or "tie"


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
    panels: list[PanelSettings] | None = None  # one per model: its own settings

    def request_for(self, panel: PanelSettings | None) -> ChatRequest:
        own = panel or PanelSettings()
        sampling = Sampling(max_tokens=own.max_tokens or self.max_tokens,
                            temperature=self.temperature if own.temperature is None else own.temperature,
                            top_p=self.top_p if own.top_p is None else own.top_p,
                            seed=self.seed if own.seed is None else own.seed, stop=tuple(self.stop)).check(str)
        return ChatRequest(tuple(Message(m.role, m.content) for m in self.messages), sampling=sampling)


@router.post("/api/compare")
async def compare(body: CompareBody, request: Request) -> StreamingResponse:
    if not MIN_MODELS <= len(body.models) <= MAX_MODELS:
        raise UsageError(f"compare takes {MIN_MODELS} to {MAX_MODELS} models, not {len(body.models)}")
    rt = runtime_of(request)
    for name in body.models:
        await check_chat(rt, name)
    if body.panels is not None and len(body.panels) != len(body.models):
        raise UsageError(f"panels gives settings for {len(body.panels)} models; give one per model "
                         f"({len(body.models)})")
    chat = [body.request_for(body.panels[i] if body.panels else None) for i in range(len(body.models))]
    options = CompareOptions(concurrent=body.concurrent, repeat=body.repeat, door=Door.ADMIN)
    return StreamingResponse(_lines(rt, body.models, chat, options), media_type="application/x-ndjson")


async def check_chat(rt: Runtime, name: str) -> None:
    """A 404 for a name nothing serves, a 400 for a local model that cannot chat: before any work."""
    if rt.router.chain(name) is not None:
        return
    entry = await asyncio.to_thread(rt.resolver.resolve, name, progress=False)
    task_check(Task.CHAT, rt.engines)(entry)


async def _lines(rt: Runtime, names: list[str], chat: list[ChatRequest],
                 options: CompareOptions) -> AsyncIterator[bytes]:
    pieces = asyncio.Queue[tuple[int, str]]()
    work = asyncio.create_task(rt.compare(names, chat, options, lambda i, text: pieces.put_nowait((i, text))))
    try:
        async for panel, text in drain(work, pieces):
            yield orjson.dumps({"panel": panel, "text": text}) + b"\n"
        for panel, row in enumerate(work.result()):
            yield orjson.dumps({"panel": panel, "result": row.to_json()}) + b"\n"
        yield b'{"done":true}\n'
    finally:
        work.cancel()  # the client left: the answers still running stop


@router.post("/api/votes")
async def vote(body: VoteBody, request: Request) -> dict[str, int]:
    """A blind comparison's verdict: the winner among the models compared, or "tie"."""
    from corral.runtime.votes import record

    rt = runtime_of(request)
    return {"id": await asyncio.to_thread(record, rt.settings.data_dir / "votes.db", body.models, body.winner)}


@router.get("/api/votes")
async def votes(request: Request) -> dict[str, Any]:
    """The win table of every vote so far."""
    from corral.runtime.votes import win_table

    rt = runtime_of(request)
    return {"table": await asyncio.to_thread(win_table, rt.settings.data_dir / "votes.db")}
