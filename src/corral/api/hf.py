"""The Hugging Face Inference API door: ``POST /models/{name}`` (the task from the model and the
payload) and ``POST /models/{name}/pipeline/{task}``, so ``InferenceClient(model=f"{base}/models/
{name}")`` works unchanged. JSON bodies ``{"inputs": ..., "parameters": {...}}`` (a binary input
base64-encoded), or a body that is the binary input itself (an image); answers in the shapes the
client parses (``protocols.hf``): JSON, or a file's bytes (text-to-speech audio)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from corral.api.common import call_info, runtime_of
from corral.api.disconnect import until_disconnected
from corral.engines.table import tasks_served
from corral.errors import UsageError
from corral.models.refs import check_name
from corral.protocols.hf.tasks import HF_TASKS, choose, split_payload
from corral.runtime.dispatcher import Door
from corral.tasks import Task
from corral.wire import Binary, dumps, loads

router = APIRouter()


async def _payload(request: Request) -> Any:
    """The JSON body, or ``{"inputs": <bytes>}`` for a body that is the binary input itself."""
    body = await request.body()
    kind = request.headers.get("content-type", "")
    if "json" in kind or (not kind and body[:1] in (b"{", b"[")):
        try:
            return loads(body or b"null")
        except ValueError as exc:
            raise UsageError(f"the request body is not valid JSON: {exc}") from None
    return {"inputs": body}


async def _answer(request: Request, name: str, task: str | None) -> Response:
    from corral.presets import without_mode

    check_name(without_mode(name))
    payload = await _payload(request)
    inputs, parameters = split_payload(payload)
    runtime = runtime_of(request)
    entry = runtime.resolver.resolve(name, progress=False)
    served = [t for t in entry.info.tasks
              if t in {x.value for x in tasks_served(entry.info.engine, entry.info.tasks, runtime.engines)}]
    chosen = choose(served, payload, task)
    call = call_info(request, Door.HF, request.url.path)
    work = HF_TASKS[chosen].run(runtime, name, inputs, parameters, call)
    if HF_TASKS[chosen].task in (Task.GENERATE_IMAGE, Task.GENERATE_VIDEO):  # long: a client that leaves stops it
        result = await until_disconnected(request, work)
    else:
        result = await work
    if isinstance(result, Binary):
        return Response(result.data, media_type=result.media_type)
    return Response(dumps(result), media_type="application/json")


@router.post("/models/{name:path}/pipeline/{task}")
async def pipeline_task(name: str, task: str, request: Request) -> Response:
    return await _answer(request, name, task)


@router.post("/models/{name:path}")
async def model_task(name: str, request: Request) -> Response:
    return await _answer(request, name, None)
