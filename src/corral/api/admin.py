"""Health, readiness, metrics and the admin API for loaded models (names, never paths)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.common import runtime_of
from corral.models.refs import check_name

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(request: Request) -> Response:
    state = request.app.state.server
    if state.ready and not state.draining:
        waiting = await state.peers() if state.peers is not None else None
        if waiting is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "starting", "waiting_for": waiting}, status_code=503)
    return JSONResponse({"status": "draining" if state.draining else "starting"}, status_code=503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(runtime_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/usage")
async def usage(request: Request, since: float | None = None) -> dict[str, Any]:
    """The ledger per day, name and target (what `corral usage --json` prints); ``since``: unix seconds."""
    from corral.runtime.requestlog import ledger

    rt = runtime_of(request)
    await asyncio.to_thread(rt.log.flush)
    rows = await asyncio.to_thread(ledger, rt.log.path, since)
    return {"since": since, "rows": rows, "total_cost_usd": sum(r["cost_usd"] for r in rows)}


@router.get("/api/health/targets", response_model=None)
async def health_targets(request: Request, deep: bool = False) -> Response:
    """What `corral health --json` prints: 200 when every required alias has a target up, else 503."""
    from corral.runtime.health import check

    report = await check(runtime_of(request), deep=deep)
    return JSONResponse(report, status_code=200 if report["ok"] else 503)


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    """The loaded models: corral's fields, and Ollama's beside them (``ollama.Client.ps()`` reads
    this route too)."""
    from corral.protocols.ollama.models import ps_fields

    rt = runtime_of(request)
    status = rt.status().to_json()
    on_gpu = str(rt.options.load.device or "").startswith("cuda")
    for model in status["models"]:
        loaded = rt.registry.models.get(model["name"])
        extra = ps_fields(loaded.entry if loaded is not None else None, model, on_gpu)
        model.update({k: v for k, v in extra.items() if k not in model})
    return status


@router.post("/api/models/{name:path}/load")
async def load(name: str, request: Request) -> dict[str, Any]:
    check_name(name)
    return {"loaded": (await runtime_of(request).load(name)).to_json()}


@router.post("/api/models/{name:path}/unload")
async def unload(name: str, request: Request) -> dict[str, Any]:
    check_name(name)
    return {"name": name, "unloaded": await runtime_of(request).unload(name)}
