"""Image and video generation at the door, the same for every door (CLI, OpenAI images and video
jobs, the Hugging Face task API, the sidecar): sizes ("WxH"), the server's limits (pixels per
image, images per request, frames) checked before any model, the task requests, one run through
the runtime with each diffusion step handed to a callback, and the results as PNG / MP4 bytes.
Transport-free."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.media_tasks import (
    GenerateImageRequest,
    GenerateImageResult,
    GenerateVideoRequest,
    GenerateVideoResult,
    Progress,
)
from corral.tasks import Task

if TYPE_CHECKING:
    from corral.config import RuntimeSettings
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*$")
MAX_PROMPT_CHARS = 32_000  # OpenAI's limit for GPT Image prompts
MAX_STEPS = 1000
MAX_SEED = 2**63 - 1
IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True)
class Limits:
    """The ``[runtime]`` limits on what one generation request may ask for."""

    max_pixels: int = 2048 * 2048
    max_images: int = 8
    max_frames: int = 18_000

    @classmethod
    def of(cls, settings: RuntimeSettings) -> Limits:
        return cls(settings.max_generated_pixels, settings.max_images, settings.max_video_frames)


def parse_size(text: str | None, what: str = "size") -> tuple[int | None, int | None]:
    """``"WxH"`` as (width, height); None, "" or "auto": the model's default (None, None)."""
    if text is None or text.strip().lower() in ("", "auto"):
        return None, None
    found = SIZE.match(text)
    if found is None:
        raise UsageError(f"{what} must be WIDTHxHEIGHT in pixels, e.g. 512x512 (got {text!r})")
    return int(found.group(1)), int(found.group(2))


def _check_common(limits: Limits, prompt: str, width: int | None, height: int | None, steps: int | None,
                  guidance: float | None, seed: int | None) -> None:
    if not prompt or not prompt.strip():
        raise UsageError("the prompt is empty", "describe the image or video to make")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UsageError(f"the prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if (width is None) != (height is None):
        raise UsageError("give both width and height, or neither (the model's default size)")
    if width is not None and height is not None:
        side = math.isqrt(limits.max_pixels)
        if width < 1 or height < 1:
            raise UsageError(f"the size {width}x{height} is empty")
        if width * height > limits.max_pixels:
            raise UsageError(f"{width}x{height} is {width * height} pixels; this server makes at most "
                             f"{limits.max_pixels} pixels per image", f"ask for a size up to about {side}x{side}")
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"steps must be from 1 to {MAX_STEPS}")
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise UsageError("guidance must be a number of at least 0")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UsageError(f"seed must be from 0 to {MAX_SEED}")


def image_request(limits: Limits, prompt: str, *, width: int | None = None, height: int | None = None, n: int = 1,
                  steps: int | None = None, guidance: float | None = None, seed: int | None = None,
                  negative_prompt: str | None = None) -> GenerateImageRequest:
    """A text-to-image request, checked against ``limits`` (422 naming what is allowed)."""
    _check_common(limits, prompt, width, height, steps, guidance, seed)
    if not 1 <= n <= limits.max_images:
        raise UsageError(f"n is {n}; this server makes from 1 to {limits.max_images} images per request")
    return GenerateImageRequest(prompt, negative_prompt or None, width, height, n, steps, guidance, seed)


def video_request(limits: Limits, prompt: str, *, width: int | None = None, height: int | None = None,
                  frames: int | None = None, fps: int = 8, steps: int | None = None, guidance: float | None = None,
                  seed: int | None = None, negative_prompt: str | None = None) -> GenerateVideoRequest:
    """A text-to-video request, checked against ``limits``."""
    _check_common(limits, prompt, width, height, steps, guidance, seed)
    if frames is not None and not 1 <= frames <= limits.max_frames:
        raise UsageError(f"frames is {frames}; this server makes from 1 to {limits.max_frames} frames")
    if not 1 <= fps <= 240:
        raise UsageError("fps must be from 1 to 240")
    return GenerateVideoRequest(prompt, negative_prompt or None, width, height, frames, fps, steps, guidance, seed)


OnProgress = Callable[[Progress], None]


async def generate(runtime: Runtime, task: Task, model: str, request: Any, call: CallInfo,
                   on_progress: OnProgress | None = None) -> Any:
    """The task's result, each diffusion step handed to ``on_progress`` first. Cancelling the
    caller closes the stream, which stops the diffusion loop at the next step (logged 499)."""
    stream, result = runtime.run(task, model, request, call), None
    try:
        async for chunk in stream:  # read to its end: a stream closed early is a call cancelled (499)
            if isinstance(chunk, Progress):
                if on_progress is not None:
                    on_progress(chunk)
            elif isinstance(chunk, (GenerateImageResult, GenerateVideoResult)):
                result = chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    if result is None:
        raise RuntimeError(f"{task.value} ended without a result")
    return result


def image_bytes(image: Any, output_format: str = "png") -> bytes:
    """An RGB image as PNG (or JPEG, WebP) bytes."""
    out = io.BytesIO()
    image.save(out, format=IMAGE_FORMATS[output_format])
    return out.getvalue()


def mp4_bytes(result: GenerateVideoResult) -> bytes:
    """A generated video's frames as an H.264 MP4."""
    from corral.video import encode_mp4

    return encode_mp4(result.frames, result.fps)


def size_of(images: tuple[Any, ...]) -> str | None:
    return f"{images[0].width}x{images[0].height}" if images else None
