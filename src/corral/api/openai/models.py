"""GET /v1/models: registered models, then aliases (marked as such)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from corral.api.common import runtime_of

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    entries = await rt.list_models()
    data = [{"id": e.name, "object": "model", "created": int(e.created_at), "owned_by": "corral",
             "corral": {"kind": "model", "tasks": e.info.tasks, "format": e.info.format, "source": e.source}}
            for e in entries]
    names = {e.name for e in entries}
    for alias, target in sorted(rt.settings.all_aliases().items()):
        if alias not in names:
            data.append({"id": alias, "object": "model", "created": 0, "owned_by": "corral",
                         "corral": {"kind": "alias", "alias_of": target}})
    return {"object": "list", "data": data}
