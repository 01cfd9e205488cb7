"""OpenAI's video jobs as ``client.videos`` calls them: ``POST /v1/videos`` (multipart form, as the
SDK sends it, or JSON), ``GET /v1/videos`` (list), ``GET /v1/videos/{id}``, ``GET
/v1/videos/{id}/content`` (the MP4), ``DELETE /v1/videos/{id}`` (cancels an unfinished job);
``protocols.openai.videos`` does the work, the app's lifespan owns the jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import FileResponse, Response

from corral.api.common import call_info
from corral.protocols.openai.images import UnsupportedParameter
from corral.protocols.openai.videos import VideoBody, VideoJobs
from corral.runtime.dispatcher import Door
from corral.wire import dumps, loads

router = APIRouter()
ROUTE = "/v1/videos"


def jobs_of(request: Request) -> VideoJobs:
    jobs: VideoJobs = request.app.state.videos
    return jobs


async def _fields(request: Request) -> dict[str, Any]:
    """The body's fields: JSON, or a multipart / urlencoded form (a file field counts as given)."""
    kind = request.headers.get("content-type", "")
    if "json" in kind:
        try:
            data = loads(await request.body() or b"null")
        except ValueError as exc:
            raise UnsupportedParameter(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UnsupportedParameter("the request body must be a JSON object")
        return data
    form = await request.form()
    return {key: ("<file>" if isinstance(value, UploadFile) else value) for key, value in form.multi_items()}


def _json(payload: Any) -> Response:
    return Response(dumps(payload), media_type="application/json")


@router.post(ROUTE, response_model=None)
async def create(request: Request) -> Response:
    try:
        body = VideoBody.model_validate(await _fields(request))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UnsupportedParameter(f"invalid parameter {where}: {first.get('msg', 'invalid value')}") from None
    return _json(await jobs_of(request).create(body, call_info(request, Door.OPENAI, ROUTE, prompt=body.prompt)))


@router.get(ROUTE, response_model=None)
async def list_videos(request: Request, after: str | None = None, limit: int = 20, order: str = "desc") -> Response:
    return _json(await jobs_of(request).list(after, limit, order))


@router.get(ROUTE + "/{video_id}", response_model=None)
async def retrieve(video_id: str, request: Request) -> Response:
    return _json(await jobs_of(request).retrieve(video_id))


@router.get(ROUTE + "/{video_id}/content", response_model=None)
async def content(video_id: str, request: Request, variant: str | None = None) -> Response:
    path = await jobs_of(request).content(video_id, variant)
    return FileResponse(path, media_type="video/mp4", filename=f"{video_id}.mp4")


@router.delete(ROUTE + "/{video_id}", response_model=None)
async def delete(video_id: str, request: Request) -> Response:
    return _json(await jobs_of(request).delete(video_id))
