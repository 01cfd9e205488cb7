"""Audio and video classification in the Hugging Face Inference API's shapes: ``[{label, score}]``
best first (``top_k``, default 5), a list of those for a list of clips. ``inputs`` is the clip: raw
bytes (a body that is only the file), base64 text or a ``data:`` URL. Every clip is decoded and
checked (``corral.audio``, ``corral.video``: not audio or video, truncated, too long: 400 / 413) off
the event loop, before any model is touched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.media import media_bytes
from corral.tasks import ClassifyAudioRequest, ClassifyVideoRequest, Task

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

MAX_CLIPS = 16


async def clips_of(inputs: Any, what: str, decode: Callable[[bytes], Any]) -> tuple[list[Any], bool]:
    """(decoded clips, whether one was given)."""
    single = not isinstance(inputs, list)
    items = [inputs] if single else inputs
    if not items or len(items) > MAX_CLIPS:
        raise UsageError(f"inputs must be {what} or a list of 1 to {MAX_CLIPS} of them")
    raw = [media_bytes(item, what) for item in items]
    return [await asyncio.to_thread(decode, data) for data in raw], single


def _top_k(parameters: dict[str, Any]) -> int:
    value = parameters.get("top_k", 5)
    if value is None:
        return 5
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise UsageError("parameters.top_k must be an integer from 1 to 1000")
    return value


def _shaped(labels: list[list[tuple[str, float]]], top_k: int, single: bool) -> Any:
    out = [[{"label": label, "score": score} for label, score in ranked[:top_k]] for ranked in labels]
    return out[0] if single else out


async def audio_classification(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                               call: CallInfo) -> Any:
    from corral.audio import decode_audio

    top_k, limit = _top_k(parameters), runtime.settings.runtime.max_audio_seconds
    clips, single = await clips_of(inputs, "audio", lambda data: decode_audio(data, max_seconds=limit))
    result = await runtime.call(Task.CLASSIFY_AUDIO, model, ClassifyAudioRequest(tuple(clips)), call)
    return _shaped(result.labels, top_k, single)


async def video_classification(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                               call: CallInfo) -> Any:
    from corral.video import decode_video

    top_k, limits = _top_k(parameters), runtime.settings.runtime
    clips, single = await clips_of(inputs, "video", lambda data: decode_video(
        data, max_frames=limits.max_video_frames, max_pixels=limits.max_image_pixels))
    result = await runtime.call(Task.CLASSIFY_VIDEO, model, ClassifyVideoRequest(tuple(clips)), call)
    return _shaped(result.labels, top_k, single)
