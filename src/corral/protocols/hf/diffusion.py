"""The Hugging Face task API's text-to-image and text-to-video: ``{"inputs": prompt, "parameters":
{...}}`` in, the image (PNG) or the video (MP4) bytes out, as ``InferenceClient.text_to_image`` /
``text_to_video`` read them. Parameters: ``negative_prompt``, ``width``/``height`` (or
``target_size``), ``num_inference_steps``, ``guidance_scale``, ``seed``; text-to-video also
``num_frames`` and corral's ``fps``. A ``scheduler`` other than the pipeline's own is refused."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.media_tasks import GenerateImageResult, GenerateVideoResult
from corral.protocols.generation import Limits, generate, image_bytes, image_request, mp4_bytes, video_request
from corral.tasks import Task
from corral.wire import Binary

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

IMAGE_PARAMETERS = {"negative_prompt", "width", "height", "target_size", "num_inference_steps", "guidance_scale",
                    "seed", "scheduler"}
VIDEO_PARAMETERS = IMAGE_PARAMETERS | {"num_frames", "fps"}


def _prompt(inputs: Any) -> str:
    if not isinstance(inputs, str):
        raise UsageError('"inputs" must be the prompt, a string')
    return inputs


def _int(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise UsageError(f"{name} must be a whole number")
    return int(value)


def _common(params: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """The generation keyword arguments every request shares."""
    unknown = sorted(set(params) - known)
    if unknown:
        raise UsageError(f"unknown parameters: {', '.join(unknown)}", f"known: {', '.join(sorted(known))}")
    if params.get("scheduler") is not None:
        raise UsageError("corral runs the pipeline with its own scheduler", "leave out scheduler")
    size = params.get("target_size") or {}
    if not isinstance(size, dict):
        raise UsageError("target_size must be {\"width\": W, \"height\": H}")
    guidance = params.get("guidance_scale")
    if guidance is not None and not isinstance(guidance, (int, float)):
        raise UsageError("guidance_scale must be a number")
    negative = params.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise UsageError("negative_prompt must be a string")
    return {"width": _int(params, "width") or _int(size, "width"), "height": _int(params, "height") or
            _int(size, "height"), "steps": _int(params, "num_inference_steps"), "seed": _int(params, "seed"),
            "guidance": None if guidance is None else float(guidance), "negative_prompt": negative}


async def text_to_image(runtime: Runtime, model: str, inputs: Any, params: dict[str, Any], call: CallInfo) -> Binary:
    request = image_request(Limits.of(runtime.settings.runtime), _prompt(inputs), **_common(params, IMAGE_PARAMETERS))
    result: GenerateImageResult = await generate(runtime, Task.GENERATE_IMAGE, model, request, call)
    return Binary(await asyncio.to_thread(image_bytes, result.images[0]), "image/png")


async def text_to_video(runtime: Runtime, model: str, inputs: Any, params: dict[str, Any], call: CallInfo) -> Binary:
    fps = _int(params, "fps")
    request = video_request(Limits.of(runtime.settings.runtime), _prompt(inputs), frames=_int(params, "num_frames"),
                            fps=8 if fps is None else fps, **_common(params, VIDEO_PARAMETERS))
    result: GenerateVideoResult = await generate(runtime, Task.GENERATE_VIDEO, model, request, call)
    return Binary(await asyncio.to_thread(mp4_bytes, result), "video/mp4")
