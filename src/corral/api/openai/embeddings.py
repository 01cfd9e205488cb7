"""POST /v1/embeddings: ``protocols.openai.embeddings``, written by orjson straight from numpy rows."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from corral.api.common import call_info, runtime_of, trace_headers
from corral.protocols.openai.embeddings import create_embeddings
from corral.protocols.openai.schemas import EmbeddingBody
from corral.runtime.dispatcher import Door
from corral.wire import dumps

router = APIRouter()
ROUTE = "/v1/embeddings"


@router.post(ROUTE, response_model=None)
async def embeddings(body: EmbeddingBody, request: Request) -> Response:
    started, call = time.perf_counter(), call_info(request, Door.OPENAI, ROUTE)
    payload = await create_embeddings(runtime_of(request), body, call)
    return Response(dumps(payload), media_type="application/json", headers=trace_headers(call.trace, started))
