"""POST /v1/images/generations: ``protocols.openai.images``; a client that leaves stops the
diffusion loop at its next step."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from corral.api.common import call_info, runtime_of
from corral.api.disconnect import until_disconnected
from corral.protocols.openai.images import ImageGenerationBody, create_images
from corral.runtime.dispatcher import Door
from corral.wire import dumps

router = APIRouter()
ROUTE = "/v1/images/generations"


@router.post(ROUTE, response_model=None)
async def generations(body: ImageGenerationBody, request: Request) -> Response:
    call = call_info(request, Door.OPENAI, ROUTE, prompt=body.prompt)
    payload = await until_disconnected(request, create_images(runtime_of(request), body, call))
    return Response(dumps(payload), media_type="application/json")
