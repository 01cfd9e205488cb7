"""Ollama's model routes: ``GET /`` ("Ollama is running"), ``/api/version``, ``/api/tags``,
``POST /api/show``, ``/api/pull`` (``hf:`` / ``pkg:`` references only, never a server path; NDJSON
progress ``{status, digest, total, completed}`` ending ``{"status": "success"}``), ``DELETE
/api/delete`` (unregister; files stay) and ``POST /api/copy`` (a second name for the same files).
``/api/ps`` is corral's own (:mod:`corral.api.admin`), with Ollama's fields added to each model."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from corral import __version__
from corral.api.common import runtime_of
from corral.api.manage import pull_reference, registered, start_pull, unregister
from corral.api.progress import drain
from corral.api.sse import ClosingStream
from corral.errors import ConflictError, CorralError, UsageError
from corral.models.refs import check_name
from corral.protocols.ollama.models import named_item, show, tag_item
from corral.protocols.ollama.names import corral_name
from corral.protocols.ollama.schemas import CopyBody, ModelBody, PullBody
from corral.runtime.runtime import Runtime

router = APIRouter()
API_VERSION = "0.12.0"  # the Ollama API level these routes follow (clients check it); corral's own is beside it


@router.get("/", include_in_schema=False)
async def root() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")


@router.head("/", include_in_schema=False)
async def root_head() -> Response:
    return Response(media_type="text/plain")


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": API_VERSION, "corral": __version__}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    """Registered models, then the config's aliases and the remote models they name (the gateway's)."""
    from corral.models.catalog import alias_rows, remote_rows

    rt = runtime_of(request)
    entries = await asyncio.to_thread(rt.store.list)
    names = [row["name"] for row in alias_rows(rt.settings, rt.store, {e.name for e in entries})]
    remote = [row["name"] for row in remote_rows(rt.settings)]
    return {"models": [*(tag_item(e) for e in entries), *(named_item(n, "alias") for n in names),
                       *(named_item(n, "remote") for n in remote)]}


@router.post("/api/show")
async def show_model(body: ModelBody, request: Request) -> dict[str, Any]:
    entry = registered(runtime_of(request), corral_name(body.model))
    return await asyncio.to_thread(show, entry)


@router.delete("/api/delete", response_model=None)
async def delete(body: ModelBody, request: Request) -> Response:
    await unregister(runtime_of(request), corral_name(body.model))
    return Response(status_code=200)


@router.post("/api/copy", response_model=None)
async def copy(body: CopyBody, request: Request) -> Response:
    rt = runtime_of(request)
    source = registered(rt, corral_name(body.source))
    target = check_name(corral_name(body.destination))
    if rt.store.get(target) is not None:
        raise ConflictError(f"a model named {target!r} is already registered",
                            "delete it first (DELETE /api/delete), or copy to another name")
    # the same files under a second name; never owned, so removing either name never deletes them
    await asyncio.to_thread(rt.store.put, target, source.source, source.source_kind, source.path, False, source.info)
    return Response(status_code=200)


@router.post("/api/pull", response_model=None)
async def pull(body: PullBody, request: Request) -> Response:
    if not body.model:
        raise UsageError("model is required", "pull hf:ORG/NAME[@REVISION] or pkg:MODULE")
    reference = pull_reference(corral_name(body.model))
    rt = runtime_of(request)
    if not body.stream:
        entry = await rt.pull(reference)
        return JSONResponse({"status": "success", "model": entry.name})
    return ClosingStream(_pull_lines(rt, reference, request.app.state), "application/x-ndjson")


async def _pull_lines(rt: Runtime, reference: str, state: Any) -> AsyncIterator[bytes]:
    """Ollama's pull progress (the same background pull as the web UI's)."""
    task, events = start_pull(rt, reference, state)
    yield orjson.dumps({"status": "pulling manifest"}) + b"\n"
    async for p in drain(task, events):
        digest = "sha256:" + hashlib.sha256(str(p.repo).encode()).hexdigest()
        line = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": p.total, "completed": p.completed}
        yield orjson.dumps(line) + b"\n"
    try:
        task.result()
    except CorralError as exc:
        yield orjson.dumps({"error": exc.message + (f" ({exc.hint})" if exc.hint else "")}) + b"\n"
        return
    yield orjson.dumps({"status": "success"}) + b"\n"
