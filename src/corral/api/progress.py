"""Long work streamed to the web UI as NDJSON: the events a background task puts on a queue as they
come, then the task's own end. ``POST /api/images/generations``: the same body and answer as
OpenAI's images route, with each diffusion step on its own line before the result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from corral.api.common import call_info, runtime_of
from corral.errors import CorralError
from corral.protocols.openai.images import ImageGenerationBody, create_images, image_request_of
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime

router = APIRouter()
ROUTE = "/api/images/generations"
E = TypeVar("E")


async def drain(work: asyncio.Future[Any], events: asyncio.Queue[E]) -> AsyncIterator[E]:
    """Each event as it is queued, until ``work`` is done and nothing is left on the queue."""
    while not work.done() or not events.empty():
        getter = asyncio.ensure_future(events.get())
        await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield getter.result()
        else:
            getter.cancel()


def error_line(exc: CorralError) -> bytes:
    return orjson.dumps({"status": "error", "error": {"message": exc.message, "hint": exc.hint,
                                                      "status": exc.http_status}}) + b"\n"


@router.post(ROUTE)
async def images(body: ImageGenerationBody, request: Request) -> StreamingResponse:
    """NDJSON: ``{"status": "step", "step", "steps"}`` per diffusion step, then ``{"status": "done",
    ...ImagesResponse}`` or ``{"status": "error", "error"}`` (a failure once generation began; a bad
    body is its 4xx before). A client that leaves stops the loop."""
    call = call_info(request, Door.ADMIN, ROUTE, prompt=body.prompt)
    image_request_of(runtime_of(request), body)  # a bad count, step number or size format: its 4xx now
    return StreamingResponse(_image_lines(runtime_of(request), body, call), media_type="application/x-ndjson")


async def _image_lines(rt: Runtime, body: ImageGenerationBody, call: CallInfo) -> AsyncIterator[bytes]:
    loop, steps = asyncio.get_running_loop(), asyncio.Queue[dict[str, Any]]()

    def on_progress(p: Any) -> None:
        loop.call_soon_threadsafe(steps.put_nowait, {"status": "step", "step": p.step, "steps": p.steps})

    work = asyncio.create_task(create_images(rt, body, call, on_progress))
    try:
        async for line in drain(work, steps):
            yield orjson.dumps(line) + b"\n"
        try:
            yield orjson.dumps({"status": "done", **work.result()}) + b"\n"
        except CorralError as exc:
            yield error_line(exc)
    finally:
        work.cancel()  # the client left: the diffusion loop stops at its next step
