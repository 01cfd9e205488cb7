"""Health, readiness, metrics and the admin API for loaded models (names, never paths)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.models.refs import check_name
from corral.runtime.dispatcher import Dispatcher
from corral.runtime.registry import LoadedModel

router = APIRouter()


def _dispatcher(request: Request) -> Dispatcher:
    d: Dispatcher = request.app.state.dispatcher
    return d


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(request: Request) -> Response:
    state = request.app.state.server
    if state.ready and not state.draining:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "draining" if state.draining else "starting"}, status_code=503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(_dispatcher(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


def describe(model: LoadedModel, dispatcher: Dispatcher, now: float) -> dict[str, Any]:
    gate = dispatcher.gate(model)
    keep = dispatcher.registry.keep_alive
    return {"name": model.name, "engine": model.entry.info.engine, "format": model.entry.info.format,
            "memory": {"measured_bytes": model.measured_bytes, "estimate_bytes": model.estimate_bytes},
            "parallel": model.handler.max_concurrency, "in_flight": model.in_flight, "queued": gate.waiting,
            "idle_seconds": round(now - model.last_used, 3),
            "expires_in_seconds": None if keep < 0 else max(0.0, round(keep - (now - model.last_used), 3))}


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    import time

    d = _dispatcher(request)
    now = time.monotonic()
    models = [describe(m, d, now) for m in sorted(d.registry.models.values(), key=lambda m: m.name)]
    return {"models": models, "budget_bytes": d.registry.budget_bytes, "max_loaded": d.registry.max_loaded,
            "resident_bytes": d.registry.resident_bytes()}


@router.post("/api/models/{name:path}/load")
async def load(name: str, request: Request) -> dict[str, Any]:
    import time

    check_name(name)
    d = _dispatcher(request)
    model = await d.registry.get(name)
    return {"loaded": describe(model, d, time.monotonic())}


@router.post("/api/models/{name:path}/unload")
async def unload(name: str, request: Request) -> dict[str, Any]:
    check_name(name)
    return {"name": name, "unloaded": await _dispatcher(request).registry.unload(name)}
