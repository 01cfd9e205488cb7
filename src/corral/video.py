"""Video a request carries or a model makes, through PyAV (FFmpeg) only: decoding with the frame
count and frame size checked from the container's header before frames are decoded (too many:
413; every way a file can be bad: 400 naming it), keeping at most ``keep`` frames sampled evenly
over the clip (a classifier reads a handful); encoding frames as an MP4 (H.264, yuv420p) for
text-to-video. PyAV is imported here only (``corral[video]``)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from corral.errors import MissingDependencyError
from corral.media import DEFAULT_MAX_PIXELS, BadMediaError, MediaTooLargeError
from corral.media_tasks import Video

DEFAULT_MAX_FRAMES = 18_000
KEEP = 32  # frames kept from a clip, evenly spaced (a video classifier samples its own count from these)
H264 = ("libx264", "libopenh264", "h264")  # encoders tried in order


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError("video needs the Python package 'av' (PyAV), which is not installed",
                                     "install it with: pip install 'corral[video]'") from None
    return av


def decode_video(data: bytes, *, max_frames: int = DEFAULT_MAX_FRAMES, max_pixels: int = DEFAULT_MAX_PIXELS,
                 keep: int = KEEP) -> Video:
    """At most ``keep`` RGB frames of the clip, evenly spaced, with its frame rate and duration."""
    av = _av()
    if not data:
        raise BadMediaError("the video is empty")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise BadMediaError("the file has no video track")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_pixels:
                raise MediaTooLargeError(f"the video's frames are {width}x{height} = {width * height} pixels; "
                                         f"the limit is {max_pixels}")
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            declared = stream.frames or (round(float(container.duration) / 1_000_000 * fps)
                                         if container.duration else 0)
            if declared > max_frames:
                raise MediaTooLargeError(f"the video has {declared} frames; the limit is {max_frames}",
                                         "send a shorter clip (the server's --max-video-frames)")
            frames, count = _sampled(container.decode(stream), declared, keep, max_frames)
    except (BadMediaError, MediaTooLargeError):
        raise
    except av.error.FFmpegError as exc:
        raise BadMediaError(f"the data is not a video corral can decode ({type(exc).__name__}: {exc})",
                            "send MP4, WebM, MKV, AVI or MOV") from None
    if not frames:
        raise BadMediaError("the video has no frames (empty or truncated)")
    return Video(tuple(frames), fps, count / fps)


def _sampled(decoded: Any, declared: int, keep: int, max_frames: int) -> tuple[list[Any], int]:
    """(``keep`` evenly spaced frames as PIL images, the frames decoded). With a frame count in the
    header the wanted indices are known; without one, every ``stride``-th frame is kept and the
    stride doubles whenever ``2 * keep`` are held, so memory stays bounded either way."""
    wanted = set(even_indices(declared, keep)) if declared else None
    kept: list[Any] = []
    stride, count = 1, 0
    for count, frame in enumerate(decoded, start=1):
        if count > max_frames:
            raise MediaTooLargeError(f"the video has more than {max_frames} frames",
                                     "send a shorter clip (the server's --max-video-frames)")
        index = count - 1
        if (index in wanted) if wanted is not None else index % stride == 0:
            kept.append(frame.to_image())  # RGB PIL
            if wanted is None and len(kept) >= 2 * keep:
                kept, stride = kept[::2], stride * 2
    return [kept[i] for i in even_indices(len(kept), keep)], count


def even_indices(total: int, keep: int) -> list[int]:
    """``keep`` indices spread evenly over ``range(total)`` (all of them if there are fewer)."""
    if total <= keep:
        return list(range(total))
    return [int(i * total / keep + total / keep / 2) for i in range(keep)]


def encode_mp4(frames: Sequence[Any], fps: int) -> bytes:
    """RGB frames (PIL images or HxWx3 uint8 arrays) as an H.264 MP4 (even sizes, yuv420p)."""
    av = _av()
    import numpy as np

    if not frames:
        raise BadMediaError("there are no frames to encode")
    first = np.asarray(frames[0])
    height, width = first.shape[0] - first.shape[0] % 2, first.shape[1] - first.shape[1] % 2
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream(_h264(av), rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in frames:
            array = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[:height, :width, :3])
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _h264(av: Any) -> str:
    for name in H264:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.error.FFmpegError, ValueError):
            continue
    raise MissingDependencyError("this PyAV build has no H.264 encoder", "install a PyAV wheel built with libx264")
