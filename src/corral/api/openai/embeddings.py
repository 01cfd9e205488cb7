"""POST /v1/embeddings: inputs checked, one runtime call (batched with concurrent ones by the
runtime), OpenAI's list written by orjson straight from numpy rows."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from corral.api.common import call_info, runtime_of
from corral.api.openai.schemas import EmbeddingBody
from corral.errors import UsageError
from corral.runtime.dispatcher import Door
from corral.tasks import EmbedRequest, EmbedResult, Task
from corral.wire import dumps, embedding_list

router = APIRouter()
ROUTE = "/v1/embeddings"
MAX_INPUTS = 2048


@router.post(ROUTE, response_model=None)
async def embeddings(body: EmbeddingBody, request: Request) -> Response:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or any(not isinstance(t, str) or not t for t in inputs):
        raise UsageError("input must be a non-empty string or a list of non-empty strings")
    if len(inputs) > MAX_INPUTS:
        raise UsageError(f"input may hold at most {MAX_INPUTS} strings")
    result: EmbedResult = await runtime_of(request).call(Task.EMBED, body.model, EmbedRequest(tuple(inputs)),
                                                         call_info(request, Door.OPENAI, ROUTE))
    payload = embedding_list(result, body.model, dimensions=body.dimensions, encoding_format=body.encoding_format)
    return Response(dumps(payload), media_type="application/json")
