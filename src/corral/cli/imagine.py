"""`corral run` for image and video generation: ``corral run SD-MODEL "a red bicycle" -o bike.png
--steps 20 --seed 1 [--size 512x512] [--negative TEXT] [--guidance G] [--n 2]`` (n > 1 writes
bike-1.png, bike-2.png, ...) and ``corral run T2V-MODEL "..." -o clip.mp4 [--frames N --fps F]``
(``-o`` a folder: the frames as PNGs). The request is checked against the ``[runtime]`` limits
before the model loads; each diffusion step moves a progress line on stderr (when it is a
terminal; rich is not a dependency of corral, so the line is corral's own); Ctrl-C stops the
diffusion loop at its next step (logged 499)."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import IO, Any

from corral.cli.context import Context, cli_runtime
from corral.cli.output import print_json
from corral.errors import UsageError
from corral.media_tasks import GenerateImageResult, GenerateVideoResult, Progress
from corral.models.store import Entry
from corral.protocols.generation import Limits, image_bytes, image_request, parse_size, video_request
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import Task
from corral.wire import usage_json

SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
BAR = 24


def add_flags(p: argparse.ArgumentParser) -> None:
    """`run`'s generation flags (``--seed`` and ``-o`` are shared with other tasks)."""
    p.add_argument("--steps", type=int, help="image / video generation: diffusion steps (default: the pipeline's)")
    p.add_argument("--size", help="image / video generation: WIDTHxHEIGHT in pixels (default: the pipeline's)")
    p.add_argument("--negative", help="image / video generation: a negative prompt (what to keep out)")
    p.add_argument("--guidance", type=float, help="image / video generation: guidance scale (default: the "
                   "pipeline's)")
    p.add_argument("--n", type=int, default=1, help="image generation: how many images (-o NAME.png then "
                   "writes NAME-1.png, NAME-2.png, ...)")
    p.add_argument("--frames", type=int, help="video generation: frames to make (default: the pipeline's)")
    p.add_argument("--fps", type=int, default=8, help="video generation: frames per second of the MP4 (8)")


class ProgressLine:
    """``step 3/20 [######------] 1.4 steps/s`` redrawn in place on a terminal; nothing elsewhere."""

    def __init__(self, out: IO[str], what: str) -> None:
        self.out, self.what, self.started = out, what, time.perf_counter()
        self.live = out.isatty()
        self.drawn = False

    def update(self, step: Progress) -> None:
        if not self.live:
            return
        done = BAR * step.step // max(1, step.steps)
        rate = step.step / max(1e-9, time.perf_counter() - self.started)
        self.out.write(f"\r{self.what} step {step.step}/{step.steps} [{'#' * done}{'-' * (BAR - done)}] "
                       f"{rate:.2f} steps/s")
        self.out.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()
            self.drawn = False


def _prompt(args: argparse.Namespace) -> str:
    return args.prompt if args.prompt is not None else sys.stdin.read().strip()


def _output(args: argparse.Namespace, example: str) -> Path:
    if not args.output:
        raise UsageError("give the file to write with -o", f'corral run {args.model} "a red bicycle" -o {example}')
    return Path(args.output)


def _run(args: argparse.Namespace, ctx: Context, task: Task, entry: Entry, request: Any, prompt: str) -> Any:
    """The task's result, its steps drawn as a progress line; Ctrl-C stops the run at its next step."""
    line = ProgressLine(sys.stderr, task.value)
    result = None
    try:
        with cli_runtime(args, ctx) as runtime, closing(runtime.stream(
                task, entry.name, request, CallInfo(Door.CLI, "run", prompt=prompt))) as chunks:
            for chunk in chunks:
                if isinstance(chunk, Progress):
                    line.update(chunk)
                else:
                    result = chunk
    finally:
        line.end()
    if result is None:
        raise RuntimeError(f"{task.value} ended without a result")
    return result


def numbered(path: Path, count: int) -> list[Path]:
    """``bike.png`` for one file; ``bike-1.png``, ``bike-2.png``, ... for several."""
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, count + 1)]


def run_generate_image(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    output = _output(args, "bike.png")
    kind = SUFFIXES.get(output.suffix.lower())
    if kind is None:
        raise UsageError(f"cannot write an image as {output.name}", "name a .png, .jpg or .webp file")
    prompt = _prompt(args)
    width, height = parse_size(args.size, "--size")
    request = image_request(Limits.of(ctx.settings.runtime), prompt, width=width, height=height, n=args.n,
                            steps=args.steps, guidance=args.guidance, seed=args.seed, negative_prompt=args.negative)
    result: GenerateImageResult = _run(args, ctx, Task.GENERATE_IMAGE, entry, request, prompt)
    paths = numbered(output, len(result.images))
    if output.parent != Path():
        output.parent.mkdir(parents=True, exist_ok=True)
    for path, image in zip(paths, result.images, strict=True):
        path.write_bytes(image_bytes(image, kind))
    first = result.images[0]
    _report(args, entry, Task.GENERATE_IMAGE, [str(p) for p in paths], result.seed, result.usage,
            size=f"{first.width}x{first.height}")
    return 0


def run_generate_video(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    output = _output(args, "clip.mp4")
    as_frames = output.suffix.lower() != ".mp4"
    if as_frames and output.suffix:
        raise UsageError(f"cannot write a video as {output.name}", "name an .mp4 file, or a folder for PNG frames")
    prompt = _prompt(args)
    width, height = parse_size(args.size, "--size")
    request = video_request(Limits.of(ctx.settings.runtime), prompt, width=width, height=height, frames=args.frames,
                            fps=args.fps, steps=args.steps, guidance=args.guidance, seed=args.seed,
                            negative_prompt=args.negative)
    result: GenerateVideoResult = _run(args, ctx, Task.GENERATE_VIDEO, entry, request, prompt)
    if as_frames:
        output.mkdir(parents=True, exist_ok=True)
        paths = [output / f"frame-{i:04d}.png" for i in range(1, len(result.frames) + 1)]
        for path, frame in zip(paths, result.frames, strict=True):
            path.write_bytes(image_bytes(frame))
        files = [str(output)]
    else:
        from corral.protocols.generation import mp4_bytes

        if output.parent != Path():
            output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(mp4_bytes(result))
        files = [str(output)]
    first = result.frames[0]
    _report(args, entry, Task.GENERATE_VIDEO, files, result.seed, result.usage, size=f"{first.width}x{first.height}",
            frames=len(result.frames), fps=result.fps)
    return 0


def _report(args: argparse.Namespace, entry: Entry, task: Task, files: list[str], seed: int | None, usage: Any,
            **facts: Any) -> None:
    if args.json:
        print_json({"model": entry.name, "task": task.value, "files": files, "seed": seed,
                    "steps": usage.completion_tokens, **facts, "usage": usage_json(usage)})
        return
    for name in files:
        print(name)
    details = ", ".join(f"{k} {v}" for k, v in facts.items())
    sys.stderr.write(f"{details}, seed {seed}, {usage.completion_tokens} steps\n")

