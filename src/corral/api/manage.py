"""The admin API over the model store and the request log, shared by the web UI and scripts: every
model with its state (``GET /api/models``), pull by reference with NDJSON progress (``hf:`` and
``pkg:`` only, never a server path), delete, the ``inspect`` report, and a page of the request log.
Names, never paths, in every URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import StreamingResponse

from corral.api.common import runtime_of
from corral.api.progress import drain, error_line
from corral.errors import BadReferenceError, CorralError, ModelNotFoundError, UsageError
from corral.models.refs import check_name, parse_ref
from corral.models.removal import Removed
from corral.models.store import Entry
from corral.runtime.runtime import Runtime

router = APIRouter()
MAX_PAGE = 500


class PullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str  # hf:org/name[@revision] or pkg:module


@router.get("/api/models")
async def models(request: Request) -> dict[str, Any]:
    """Registered, built-in, remote models and aliases (as `corral list --json`), each local one with
    its state: loaded (with its memory, queue and time to unload) or not; and the memory budget."""
    from corral.models.catalog import alias_rows, model_rows, remote_rows

    rt = runtime_of(request)
    rows = await asyncio.to_thread(model_rows, rt.store)
    status = rt.status()
    loaded = {m.name: m.to_json() for m in status.models}
    for row in rows:
        row["state"] = "loaded" if row["name"] in loaded else "not loaded"
        row["loaded"] = loaded.get(row["name"])
    aliases = alias_rows(rt.settings, rt.store, {r["name"] for r in rows})
    return {"models": rows + remote_rows(rt.settings) + aliases, "budget_bytes": status.budget_bytes,
            "resident_bytes": status.resident_bytes, "max_loaded": status.max_loaded}


def pull_reference(text: str) -> str:
    """``text`` when it is an hf: or pkg: reference; a 400 otherwise (a path, a bare name)."""
    if not text.startswith(("hf:", "pkg:")):
        raise BadReferenceError(f"{text[:200]!r} is not an hf: or pkg: reference",
                                "pull hf:ORG/NAME[@REVISION] or pkg:MODULE; paths are never taken from a request")
    parse_ref(text, allow_paths=False)
    return text


@router.post("/api/models/pull")
async def pull(body: PullBody, request: Request) -> StreamingResponse:
    """NDJSON: ``{"status": "pulling", "reference"}``, then ``{"status": "downloading", "repo",
    "completed", "total"}`` as bytes arrive, then ``{"status": "success", "model": NAME}`` or
    ``{"status": "error", "error": {message, hint, status}}``. A client that leaves does not stop
    the download: the model is registered when it ends."""
    reference = pull_reference(body.model)
    rt = runtime_of(request)
    return StreamingResponse(_pull_lines(rt, reference, request.app.state), media_type="application/x-ndjson")


def start_pull(rt: Runtime, reference: str, state: Any) -> tuple[asyncio.Task[Entry], asyncio.Queue[Any]]:
    """The pull of ``reference`` as a background task of the app (a client that leaves does not stop
    it: the model is registered when it ends), and the queue its progress events arrive on."""
    loop, events = asyncio.get_running_loop(), asyncio.Queue[Any]()

    def progress(p: Any) -> None:  # called from the download's thread
        loop.call_soon_threadsafe(events.put_nowait, p)

    task = asyncio.create_task(rt.pull(reference, progress=progress))
    background: set[asyncio.Task[Any]] = state.background
    background.add(task)
    task.add_done_callback(background.discard)
    return task, events


async def _pull_lines(rt: Runtime, reference: str, state: Any) -> AsyncIterator[bytes]:
    task, events = start_pull(rt, reference, state)
    yield orjson.dumps({"status": "pulling", "reference": reference}) + b"\n"
    async for p in drain(task, events):
        yield orjson.dumps({"status": "downloading", "repo": p.repo, "completed": p.completed,
                            "total": p.total}) + b"\n"
    try:
        entry = task.result()
    except CorralError as exc:
        yield error_line(exc)
        return
    yield orjson.dumps({"status": "success", "model": entry.name}) + b"\n"


def registered(rt: Runtime, name: str) -> Entry:
    """The registered model ``name`` (a valid name, never a path), or a 404."""
    entry = rt.store.get(check_name(name))
    if entry is None:
        raise ModelNotFoundError(f"no model named {name!r} is registered", "see GET /api/models")
    return entry


@router.delete("/api/models/{name:path}")
async def delete(name: str, request: Request, delete_files: bool = False) -> dict[str, Any]:
    """Unload (if loaded) and unregister; ``delete_files``: also the files corral downloaded."""
    removed = await unregister(runtime_of(request), name, delete_files=delete_files)
    return removed.to_json()


async def unregister(rt: Runtime, name: str, *, delete_files: bool = False) -> Removed:
    """Unload (if loaded) and unregister the registered model ``name`` (a 404 otherwise)."""
    from corral.models.removal import remove_model

    registered(rt, name)
    await rt.unload(name)
    return await asyncio.to_thread(remove_model, rt.store, name, delete_files=delete_files)


@router.get("/api/models/{name:path}/inspect")
async def inspect(name: str, request: Request) -> dict[str, Any]:
    """What `corral inspect --json` prints for a registered model: read from its files, no load."""
    from corral.engines.table import tasks_served
    from corral.models.inspect import inspect_path
    from corral.protocols.routes import routes_for

    entry = registered(runtime_of(request), name)
    info = await asyncio.to_thread(inspect_path, entry.path)
    return {"name": entry.name, **info.to_dict(), "routes": routes_for(info.tasks, tasks_served(info.engine,
                                                                                               info.tasks))}


@router.get("/api/logs")
async def logs(request: Request, model: str | None = None, status: str | None = None, door: str | None = None,
               before: int | None = None, limit: int = 50) -> dict[str, Any]:
    """The request log, newest first: filter by model (asked for or served), status (ok, error or a
    code), door; page with ``before`` (the last id of the previous page)."""
    from corral.runtime.requestlog import page

    if not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"limit must be 1 to {MAX_PAGE}, not {limit}")
    if before is not None and not 0 <= before < 2**63:  # a row id: SQLite's INTEGER
        raise UsageError(f"before must be a row id from a previous page (0 to {2**63 - 1})")
    if status is not None and status not in ("ok", "error") and not (status.isdigit() and len(status) == 3):
        raise UsageError(f"status must be ok, error or a three-digit code, not {status[:20]!r}")
    rt = runtime_of(request)
    await asyncio.to_thread(rt.log.flush)
    rows = await asyncio.to_thread(page, rt.log.path, model=model, status=status, door=door, before=before,
                                   limit=limit)
    return {"rows": rows, "next_before": rows[-1]["id"] if len(rows) == limit else None}
