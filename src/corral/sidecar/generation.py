"""The sidecar's generate_image and generate_video: the same fields and checks as the HTTP door
(``protocols.openai.images`` / ``protocols.openai.videos``), each diffusion step sent as
``notifications/progress`` to the request's ``_meta.progressToken``; answers carry the images as
base64 PNGs (OpenAI's ImagesResponse) and the video as a base64 MP4. A cancel stops the diffusion
loop at its next step before it is answered."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

from corral.media_tasks import GenerateVideoResult
from corral.protocols.generation import generate, mp4_bytes
from corral.protocols.openai.images import ImageGenerationBody, UnsupportedParameter, create_images
from corral.protocols.openai.videos import VideoBody, video_request_of
from corral.sidecar.streaming import step_progress
from corral.tasks import Task
from corral.wire import usage_json

if TYPE_CHECKING:
    from corral.sidecar.methods import Session


def _token(params: dict[str, Any]) -> int | str | None:
    meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
    token = meta.get("progressToken", params.get("progressToken")) if isinstance(meta, dict) else None
    return token if isinstance(token, (int, str)) and not isinstance(token, bool) else None


async def generate_image(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    body = ImageGenerationBody.model_validate(params)
    return await create_images(session.runtime, body, session.call("generate_image"),
                               step_progress(session, _token(params), "generate_image"))


async def generate_video(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    body = VideoBody.model_validate(params)
    if not body.model:
        raise UnsupportedParameter("model is required: the name of a text-to-video model")
    request = video_request_of(body, session.runtime.settings.runtime)
    result: GenerateVideoResult = await generate(session.runtime, Task.GENERATE_VIDEO, body.model, request,
                                                 session.call("generate_video"),
                                                 step_progress(session, _token(params), "generate_video"))
    data = await asyncio.to_thread(mp4_bytes, result)
    first = result.frames[0]
    return {"model": body.model, "b64_json": base64.b64encode(data).decode(), "mime_type": "video/mp4",
            "frames": len(result.frames), "fps": result.fps, "seconds": len(result.frames) / result.fps,
            "size": f"{first.width}x{first.height}", "seed": result.seed, "usage": usage_json(result.usage)}
