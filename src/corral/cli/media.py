"""`corral run` for audio and video classifiers, and the one way the CLI reads a media file named on
the command line (a path, or ``-`` for stdin): the clip decoded and checked with the server's limits
(the settings), one call through the runtime (logged with door cli), labels as a table or ``--json``
in the Hugging Face task API's shape."""

from __future__ import annotations

import argparse
import sys

from corral.cli.context import Context, cli_runtime
from corral.cli.output import print_json, table
from corral.errors import UsageError
from corral.models.store import Entry
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import ClassifyAudioRequest, ClassifyVideoRequest, Task


def read_bytes(name: str | None, what: str, example: str) -> bytes:
    """The bytes of the file ``name`` (``-``: stdin); a UsageError naming what was expected."""
    from pathlib import Path

    if name is None:
        raise UsageError(f"this model needs {what}: a file path, or - to read it from stdin", example)
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"no such {what} file: {path}")
    return path.read_bytes()


def _labels(args: argparse.Namespace, ranked: list[tuple[str, float]]) -> int:
    scored = ranked[: args.top_k or 5]
    if args.json:
        print_json([{"label": label, "score": score} for label, score in scored])
    else:
        print(table(["label", "score"], [[label, f"{score:.4f}"] for label, score in scored]))
    return 0


def run_classify_audio(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run AUDIO_CLASSIFIER clip.wav [--top-k K]`."""
    from corral.audio import decode_audio

    data = read_bytes(args.prompt, "audio", "corral run MODEL clip.wav")
    clip = decode_audio(data, max_seconds=ctx.settings.runtime.max_audio_seconds)
    with cli_runtime(args, ctx) as runtime:
        result = runtime.call(Task.CLASSIFY_AUDIO, entry.name, ClassifyAudioRequest((clip,)),
                              CallInfo(Door.CLI, "run"))
    return _labels(args, result.labels[0])


def run_classify_video(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run VIDEO_CLASSIFIER clip.mp4 [--top-k K]`."""
    from corral.video import decode_video

    limits = ctx.settings.runtime
    data = read_bytes(args.prompt, "video", "corral run MODEL clip.mp4")
    clip = decode_video(data, max_frames=limits.max_video_frames, max_pixels=limits.max_image_pixels)
    with cli_runtime(args, ctx) as runtime:
        result = runtime.call(Task.CLASSIFY_VIDEO, entry.name, ClassifyVideoRequest((clip,)),
                              CallInfo(Door.CLI, "run"))
    return _labels(args, result.labels[0])
