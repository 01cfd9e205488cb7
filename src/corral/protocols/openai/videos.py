"""OpenAI's video jobs (``client.videos``) over corral's generate_video, transport-free: create a
job (checked against the server's limits and the model's tasks before it is queued), its steps
as the job's ``progress``, the MP4 kept by :class:`~corral.runtime.videojobs.VideoJobStore`;
retrieve, list, download and delete. Deleting a job that has not finished cancels it (the
diffusion loop stops at its next step; the job stays, ``cancelled``); deleting a finished one
removes it and its file. Fields: ``prompt``, ``model``, ``size`` (WxH), ``seconds``; corral's
extras ``frames`` (else seconds x fps), ``fps`` (8), ``seed``, ``steps``, ``guidance``,
``negative_prompt``."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from corral.engines.table import tasks_served
from corral.errors import BusyError, ConflictError, CorralError, ModelNotFoundError, UnsupportedTaskError
from corral.media_tasks import GenerateVideoResult, Progress
from corral.models.pipeline_sizes import check_multiple
from corral.models.refs import check_name
from corral.protocols.generation import Limits, generate, mp4_bytes, parse_size, video_request
from corral.protocols.openai.images import UnsupportedParameter
from corral.runtime.videojobs import VideoJob, VideoJobStore
from corral.tasks import GenerateVideoRequest, Task

if TYPE_CHECKING:
    from corral.config import RuntimeSettings
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime


class VideoBody(BaseModel):
    """The fields of ``POST /v1/videos`` (multipart form or JSON; form values are strings)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    model: str | None = Field(default=None, max_length=300)
    size: str | None = None
    seconds: float | None = Field(default=None, gt=0, le=3600)
    input_reference: Any = None
    frames: int | None = None
    fps: int = 8
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None


def video_request_of(body: VideoBody, settings: RuntimeSettings) -> GenerateVideoRequest:
    """The generate_video request a body asks for, checked against the server's limits."""
    if body.input_reference not in (None, ""):
        raise UnsupportedParameter("corral makes video from text only: input_reference is not supported",
                                   "leave out input_reference")
    width, height = parse_size(body.size)
    frames = body.frames
    if frames is None and body.seconds is not None:
        frames = max(1, round(body.seconds * body.fps))
    return video_request(Limits.of(settings), body.prompt, width=width, height=height, frames=frames, fps=body.fps,
                         steps=body.steps, guidance=body.guidance, seed=body.seed,
                         negative_prompt=body.negative_prompt)


def video_object(job: VideoJob) -> dict[str, Any]:
    """A job as OpenAI's Video object."""
    error = None if job.error_code is None else {"code": job.error_code, "message": job.error_message or ""}
    return {"id": job.id, "object": "video", "model": job.model, "status": job.status, "progress": job.progress,
            "created_at": job.created_at, "completed_at": job.completed_at, "expires_at": None, "prompt": job.prompt,
            "seconds": job.seconds, "size": job.size, "error": error, "remixed_from_video_id": None,
            "frames": job.frames, "fps": job.fps, "seed": job.seed}


class VideoJobs:
    """The jobs of one server: their rows and files, and the tasks making them."""

    def __init__(self, runtime: Runtime, store: VideoJobStore | None = None) -> None:
        self.runtime = runtime
        self.store = store or VideoJobStore(runtime.settings.data_dir)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.cancelled: set[str] = set()

    async def _check_model(self, name: str | None, request: GenerateVideoRequest) -> str:
        """A registered model that makes video, at a size its pipeline makes (where its folder says which
        multiple), else 400 / 404 / 422 before any job exists."""
        if not name:
            raise UnsupportedParameter("model is required: the name of a text-to-video model", "corral list")
        entry = await asyncio.to_thread(self.runtime.resolver.resolve, check_name(name), progress=False)
        if Task.GENERATE_VIDEO not in tasks_served(entry.info.engine, entry.info.tasks, self.runtime.engines):
            raise UnsupportedTaskError(f"{name} does not make video; it serves: {', '.join(entry.info.tasks)}",
                                       "use a text-to-video model")
        if entry.info.size_multiple:
            check_multiple(entry.info.size_multiple, request.width, request.height)
        return name

    async def create(self, body: VideoBody, call: CallInfo) -> dict[str, Any]:
        request = video_request_of(body, self.runtime.settings.runtime)
        model = await self._check_model(body.model, request)
        limit = max(1, self.runtime.options.max_queue)
        if await asyncio.to_thread(self.store.unfinished) >= limit:
            raise BusyError(f"{limit} video jobs are waiting or running already", "try again later", status=429)
        seconds = f"{request.frames / request.fps:g}" if request.frames else None
        size = f"{request.width}x{request.height}" if request.width else None
        job = VideoJob(f"video_{secrets.token_hex(12)}", int(time.time()), model, body.prompt, request.fps,
                       seconds=seconds, size=size, frames=request.frames, seed=request.seed)
        await asyncio.to_thread(self.store.add, job)
        self.running[job.id] = asyncio.create_task(self._make(job.id, model, request, call))
        return video_object(job)

    async def _make(self, job_id: str, model: str, request: GenerateVideoRequest, call: CallInfo) -> None:
        store = self.store

        def step(progress: Progress) -> None:
            percent = min(99, progress.step * 100 // max(1, progress.steps))
            store.update(job_id, status="in_progress", progress=percent)

        try:
            result: GenerateVideoResult = await generate(self.runtime, Task.GENERATE_VIDEO, model, request, call, step)
            data = await asyncio.to_thread(mp4_bytes, result)
            await asyncio.to_thread(store.write_content, job_id, data)
            first = result.frames[0]
            store.update(job_id, status="completed", progress=100, completed_at=int(time.time()), seed=result.seed,
                         frames=len(result.frames), seconds=f"{len(result.frames) / result.fps:g}",
                         size=f"{first.width}x{first.height}")
        except asyncio.CancelledError:
            code, message = (("cancelled", "the video job was cancelled") if job_id in self.cancelled else
                             ("server_stopped", "the server stopped before the video was made"))
            store.update(job_id, status="cancelled" if job_id in self.cancelled else "failed", error_code=code,
                         error_message=message, completed_at=int(time.time()))
        except CorralError as exc:
            store.update(job_id, status="failed", error_code=type(exc).__name__, completed_at=int(time.time()),
                         error_message=exc.message + (f" ({exc.hint})" if exc.hint else ""))
        except Exception as exc:  # recorded on the job: the client polls for it
            store.update(job_id, status="failed", error_code="internal_error", completed_at=int(time.time()),
                         error_message=f"{type(exc).__name__}: {exc}")
        finally:
            self.running.pop(job_id, None)
            self.cancelled.discard(job_id)

    def _job(self, job_id: str) -> VideoJob:
        job = self.store.get(job_id)
        if job is None:
            raise ModelNotFoundError(f"no video job {job_id!r}", "GET /v1/videos lists the jobs")
        return job

    async def retrieve(self, job_id: str) -> dict[str, Any]:
        return video_object(await asyncio.to_thread(self._job, job_id))

    async def list(self, after: str | None, limit: int, order: str) -> dict[str, Any]:
        jobs, more = await asyncio.to_thread(self.store.page, after, max(1, min(limit, 100)), order != "asc")
        return {"object": "list", "data": [video_object(j) for j in jobs], "has_more": more,
                "first_id": jobs[0].id if jobs else None, "last_id": jobs[-1].id if jobs else None}

    async def delete(self, job_id: str) -> dict[str, Any]:
        """Cancel an unfinished job (it stays, cancelled); remove a finished one and its file."""
        job = await asyncio.to_thread(self._job, job_id)
        task = self.running.get(job_id)
        if task is not None and not job.finished:
            self.cancelled.add(job_id)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # the engine has stopped once this returns
            return {"id": job_id, "object": "video.deleted", "deleted": False}
        await asyncio.to_thread(self.store.remove, job_id)
        return {"id": job_id, "object": "video.deleted", "deleted": True}

    async def content(self, job_id: str, variant: str | None = None) -> Path:
        """The finished job's MP4."""
        if variant not in (None, "video"):
            raise UnsupportedParameter(f"variant {variant!r} is not available", "corral keeps the video only")
        job = await asyncio.to_thread(self._job, job_id)
        path = self.store.content_path(job_id)
        if job.status != "completed" or not path.is_file():
            raise ConflictError(f"video {job_id} has no content: it is {job.status}",
                                "poll GET /v1/videos/{id} until its status is completed")
        return path

    async def close(self) -> None:
        """Stop every running job (marked failed: the server stopped) and close the store."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.store.close)
