"""POST /v1/rerank (also /rerank and /v2/rerank, as vLLM serves it): ``protocols.rerank``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from corral.api.common import call_info, runtime_of
from corral.protocols.rerank import RerankBody, create_rerank
from corral.runtime.dispatcher import Door

router = APIRouter()
ROUTES = ("/v1/rerank", "/rerank", "/v2/rerank")


async def rerank(body: RerankBody, request: Request) -> dict[str, Any]:
    return await create_rerank(runtime_of(request), body, call_info(request, Door.RERANK, request.url.path))


for _route in ROUTES:
    router.add_api_route(_route, rerank, methods=["POST"])
