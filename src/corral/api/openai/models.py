"""GET /v1/models: registered models, the remote models the config names, then aliases (marked as such)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from corral.api.common import runtime_of
from corral.models.catalog import alias_rows, remote_rows

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    entries = await rt.list_models()
    data = [{"id": e.name, "object": "model", "created": int(e.created_at), "owned_by": "corral",
             "corral": {"kind": "model", "tasks": e.info.tasks, "format": e.info.format, "source": e.source}}
            for e in entries]
    names = {e.name for e in entries}
    for row in remote_rows(rt.settings):
        data.append({"id": row["name"], "object": "model", "created": 0, "owned_by": row["provider"],
                     "corral": {"kind": "remote", "provider": row["provider"], "type": row["type"]}})
    for row in alias_rows(rt.settings, rt.store, names):
        data.append({"id": row["name"], "object": "model", "created": 0, "owned_by": "corral",
                     "corral": {"kind": "alias", "alias_of": row["alias_of"], "targets": row["targets"]}})
    return {"object": "list", "data": data}
