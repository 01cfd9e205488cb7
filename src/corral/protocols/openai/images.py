"""OpenAI image generation (``POST /v1/images/generations``) in corral's terms, for every door:
the body checked against the server's limits before any model, one generate_image run (its
steps to an optional callback), OpenAI's ImagesResponse with ``b64_json`` images. ``url`` answers
are refused (corral hosts no files); ``quality``, ``style``, ``background``, ``moderation`` and
``user`` are accepted and ignored. corral's extras, sent by the SDK as ``extra_body``: ``seed``
(the response says which seed was used), ``steps``, ``guidance``, ``negative_prompt``."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.errors import CorralError
from corral.media_tasks import GenerateImageResult
from corral.protocols.generation import (
    Limits,
    OnProgress,
    generate,
    image_bytes,
    image_request,
    parse_size,
    size_of,
)
from corral.tasks import Task

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime


class UnsupportedParameter(CorralError):
    """A parameter value OpenAI has and corral does not serve."""

    http_status = 400


class ImageGenerationBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # quality, style, background, moderation, user: ignored

    model: str = Field(min_length=1, max_length=300)
    prompt: str
    n: int = 1
    size: str | None = None
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    stream: bool = False
    # corral's extras
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None


async def create_images(runtime: Runtime, body: ImageGenerationBody, call: CallInfo,
                        on_progress: OnProgress | None = None) -> dict[str, Any]:
    """OpenAI's ImagesResponse for ``body``."""
    request = image_request_of(runtime, body)
    result: GenerateImageResult = await generate(runtime, Task.GENERATE_IMAGE, body.model, request, call,
                                                 on_progress)
    return await images_response(result, body.output_format or "png")


def image_request_of(runtime: Runtime, body: ImageGenerationBody) -> Any:
    """The generate_image request ``body`` asks for, checked against the server's limits (4xx errors
    before any model is touched)."""
    if body.response_format == "url":
        raise UnsupportedParameter("response_format url is not available: corral does not host image files",
                                   "use response_format b64_json (the default)")
    if body.stream:
        raise UnsupportedParameter("corral does not stream partial images", "leave out stream")
    width, height = parse_size(body.size)
    return image_request(Limits.of(runtime.settings.runtime), body.prompt, width=width, height=height,
                         n=body.n, steps=body.steps, guidance=body.guidance, seed=body.seed,
                         negative_prompt=body.negative_prompt)


async def images_response(result: GenerateImageResult, output_format: str = "png") -> dict[str, Any]:
    """The ImagesResponse of a result (images encoded off the event loop)."""
    import base64

    encoded = await asyncio.to_thread(lambda: [image_bytes(i, output_format) for i in result.images])
    usage = result.usage
    return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(e).decode()} for e in encoded],
            "output_format": output_format, "size": size_of(result.images), "seed": result.seed,
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": 0, "total_tokens": usage.prompt_tokens,
                      "input_tokens_details": {"text_tokens": usage.prompt_tokens, "image_tokens": 0}},
            "steps": usage.completion_tokens}
