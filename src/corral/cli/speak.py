"""`corral run TTS-MODEL "text" -o speech.wav`: text to speech through the runtime (logged with
door cli). The format follows the file's extension (wav, flac, mp3, opus or ogg, aac, pcm: raw
24 kHz 16-bit, as OpenAI's), written once synthesis ends (to a temporary name, then renamed).
Without ``-o`` the audio goes to stdout as a WAV streamed as it is synthesised (``| aplay``,
``> out.wav``), never to a terminal. The text comes from stdin when left out; ``--voice`` and
``--speed`` as in OpenAI's speech API."""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

from corral.cli.context import Context, cli_runtime
from corral.cli.output import print_json
from corral.errors import UsageError
from corral.models.store import Entry
from corral.runtime.dispatcher import CallInfo, Door
from corral.speech import speak_request
from corral.tasks import SpeakRequest, Task

EXTENSIONS = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".aac": "aac",
              ".pcm": "pcm", ".raw": "pcm"}


def format_of(path: Path) -> str:
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the audio format of {path.name!r} from its extension",
                         f"end the file name with one of: {', '.join(EXTENSIONS)}")
    return fmt


def run_speak(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    text = args.prompt if args.prompt is not None else sys.stdin.read()
    request = speak_request(text, args.voice, args.speed, ctx.settings.runtime.max_speech_chars)
    out = Path(args.output) if args.output else None
    fmt = format_of(out) if out is not None else "wav"
    if out is None and sys.stdout.isatty():
        raise UsageError("refusing to write audio to a terminal",
                         f'write it to a file: corral run {entry.name} "..." -o speech.wav (or pipe it: | aplay)')
    started = time.perf_counter()
    if out is None:
        seconds, rate = _stream_wav(args, ctx, entry, request, sys.stdout.buffer)
    else:
        seconds, rate = _write_file(args, ctx, entry, request, out, fmt)
    elapsed = time.perf_counter() - started
    summary = {"model": entry.name, "task": Task.SPEAK.value, "file": str(out) if out else None, "format": fmt,
               "sample_rate": rate, "seconds_of_audio": round(seconds, 3), "seconds": round(elapsed, 4),
               "characters": len(request.text)}
    if args.json and out is not None:
        print_json(summary)
    else:
        where = str(out) if out else "stdout"
        print(f"wrote {seconds:.2f} s of audio ({fmt}, {rate} Hz) to {where} in {elapsed:.2f} s", file=sys.stderr)
    return 0


def _stream_wav(args: argparse.Namespace, ctx: Context, entry: Entry, request: SpeakRequest,
                sink: BinaryIO) -> tuple[float, int]:
    """A WAV to ``sink`` as it is synthesised: (seconds of audio, sample rate)."""
    from corral.audio import pcm16, wav_header

    frames, rate = 0, 0
    with cli_runtime(args, ctx) as runtime, closing(runtime.stream(
            Task.SPEAK, entry.name, request, CallInfo(Door.CLI, "run", prompt=request.text))) as chunks:
        for chunk in chunks:
            if not rate:
                rate = chunk.sample_rate
                sink.write(wav_header(rate))
            if len(chunk.samples):
                sink.write(pcm16(chunk.samples))
                sink.flush()
                frames += len(chunk.samples)
    return frames / rate if rate else 0.0, rate


def _write_file(args: argparse.Namespace, ctx: Context, entry: Entry, request: SpeakRequest, out: Path,
                fmt: str) -> tuple[float, int]:
    import numpy as np

    from corral.audio import PCM_RATE, encode_audio
    from corral.media_tasks import Audio

    if out.parent and not out.parent.is_dir():
        raise UsageError(f"no such folder: {out.parent}")
    parts, rate = [], 0
    with cli_runtime(args, ctx) as runtime, closing(runtime.stream(
            Task.SPEAK, entry.name, request, CallInfo(Door.CLI, "run", prompt=request.text))) as chunks:
        for chunk in chunks:
            rate = chunk.sample_rate
            parts.append(chunk.samples)
    audio = Audio(np.concatenate(parts).astype(np.float32), rate)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_bytes(encode_audio(audio, fmt))
    os.replace(partial, out)
    return audio.duration, PCM_RATE if fmt == "pcm" else rate
