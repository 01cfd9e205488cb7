"""Ollama's generation routes: ``POST /api/chat``, ``/api/generate``, ``/api/embed`` and the older
``/api/embeddings``, over the same runtime as every door (logged with door ``ollama``). NDJSON
streams (``application/x-ndjson``) unless ``"stream": false``; an error before the stream is
Ollama's ``{"error": ...}`` with its status, one after it an ``{"error": ...}`` line, then the end.
Model names as Ollama clients send them (``NAME:latest``); ``keep_alive`` per request."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.common import call_info, runtime_of
from corral.api.sse import ClosingStream
from corral.config import parse_duration
from corral.errors import CorralError, UsageError
from corral.protocols.ollama.chat import (
    Timing,
    chat_body,
    completion_body,
    completion_deltas,
    fold,
    generate_body,
    now_iso,
    ollama_chunks,
)
from corral.protocols.ollama.names import corral_name
from corral.protocols.ollama.schemas import ChatBody, EmbedBody, EmbeddingsBody, GenerateBody
from corral.protocols.openai.chat import start_chat
from corral.protocols.openai.completions import start_completion
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime
from corral.tasks import EmbedRequest, EmbedResult, Task

log = logging.getLogger("corral.api")
router = APIRouter()
NDJSON = "application/x-ndjson"


def keep_seconds(value: float | str | None) -> float | None:
    """``keep_alive`` as seconds (negative: forever), None when not given."""
    if value is None or value == "":
        return None
    try:
        seconds = float(parse_duration(value))
    except ValueError as exc:
        raise UsageError(f"keep_alive: {exc}") from None
    return seconds


async def _ndjson(chunks: AsyncIterator[dict[str, Any]], after: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield orjson.dumps(chunk) + b"\n"
    except CorralError as exc:
        yield orjson.dumps({"error": exc.message + (f" ({exc.hint})" if exc.hint else "")}) + b"\n"
    except Exception as exc:
        log.exception("an Ollama stream failed")
        yield orjson.dumps({"error": f"internal error: {type(exc).__name__}"}) + b"\n"
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
        await after()


async def _respond(chunks: AsyncIterator[dict[str, Any]], stream: bool, key: str, after: Any) -> Response:
    if stream:
        return ClosingStream(_ndjson(chunks, after), NDJSON)
    try:
        got = [c async for c in chunks]
    finally:
        await after()
    return JSONResponse(fold(got, key))


def _after(rt: Runtime, name: str, keep: float | None) -> Any:
    async def apply() -> None:
        if keep is not None:
            with contextlib.suppress(CorralError):
                await rt.keep_loaded(name, keep)

    return apply


async def _load_only(rt: Runtime, model: str, name: str, keep: float | None, key: str) -> JSONResponse:
    """An empty chat / prompt: load the model (``keep_alive`` 0: unload it), as Ollama does."""
    if keep == 0:
        await rt.unload(name)
        reason = "unload"
    else:
        await rt.load(name)
        await _after(rt, name, keep)()
        reason = "load"
    piece = {"response": ""} if key == "response" else {"message": {"role": "assistant", "content": ""}}
    return JSONResponse({"model": model, "created_at": now_iso(), **piece, "done": True, "done_reason": reason})


def _call(request: Request, route: str) -> CallInfo:
    return call_info(request, Door.OLLAMA, route)


@router.post("/api/chat", response_model=None)
async def chat(body: ChatBody, request: Request) -> Response:
    rt, name, keep = runtime_of(request), corral_name(body.model), keep_seconds(body.keep_alive)
    if not body.model:
        raise UsageError("model is required")
    if not body.messages:
        return await _load_only(rt, body.model, name, keep, "message")
    timing, call = Timing(), _call(request, "/api/chat")
    run = await start_chat(rt, chat_body(body, name), call)
    chunks = ollama_chunks(run.chunks(True), body.model, timing, lambda: call.trace.load_ms, key="message")
    return await _respond(chunks, body.stream, "message", _after(rt, name, keep))


@router.post("/api/generate", response_model=None)
async def generate(body: GenerateBody, request: Request) -> Response:
    rt, name, keep = runtime_of(request), corral_name(body.model), keep_seconds(body.keep_alive)
    if not body.model:
        raise UsageError("model is required")
    if not body.prompt and not body.images:
        return await _load_only(rt, body.model, name, keep, "response")
    if body.suffix:
        raise UsageError("suffix (fill-in-the-middle) is not supported", "send the text before the gap as prompt")
    timing, call = Timing(), _call(request, "/api/generate")
    if body.raw:  # no template: the prompt goes to the model as it is
        openai = completion_deltas((await start_completion(rt, completion_body(body, name), call)).chunks(True))
    else:
        openai = (await start_chat(rt, generate_body(body, name), call)).chunks(True)
    chunks = ollama_chunks(openai, body.model, timing, lambda: call.trace.load_ms, key="response")
    return await _respond(chunks, body.stream, "response", _after(rt, name, keep))


async def _embed(rt: Runtime, name: str, inputs: list[str], call: CallInfo) -> EmbedResult:
    if not inputs or any(not text for text in inputs):
        raise UsageError("input must be a non-empty string or a list of non-empty strings")
    result: EmbedResult = await rt.call(Task.EMBED, name, EmbedRequest(tuple(inputs)), call)
    return result


@router.post("/api/embed", response_model=None)
async def embed(body: EmbedBody, request: Request) -> Response:
    rt, name, keep = runtime_of(request), corral_name(body.model), keep_seconds(body.keep_alive)
    started, call = time.perf_counter(), _call(request, "/api/embed")
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    result = await _embed(rt, name, inputs, call)
    vectors = [[float(x) for x in row[: body.dimensions or None]] for row in result.vectors]
    await _after(rt, name, keep)()
    load_ns = int((call.trace.load_ms or 0) * 1e6)
    return Response(orjson.dumps({"model": body.model, "embeddings": vectors,
                                  "total_duration": int((time.perf_counter() - started) * 1e9),
                                  "load_duration": load_ns, "prompt_eval_count": result.usage.prompt_tokens}),
                    media_type="application/json")


@router.post("/api/embeddings", response_model=None)
async def embeddings(body: EmbeddingsBody, request: Request) -> Response:
    """The older single-prompt route: ``{"embedding": [...]}``."""
    rt, name, keep = runtime_of(request), corral_name(body.model), keep_seconds(body.keep_alive)
    result = await _embed(rt, name, [body.prompt], _call(request, "/api/embeddings"))
    await _after(rt, name, keep)()
    return Response(orjson.dumps({"embedding": [float(x) for x in result.vectors[0]]}), media_type="application/json")
