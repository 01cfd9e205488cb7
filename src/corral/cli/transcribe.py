"""`corral run SPEECH_MODEL speech.wav` (``-``: the audio from stdin): the transcript, or with
``--timestamps segment|word`` each segment or word with its times; ``--format srt|vtt`` subtitles
and ``--format json`` (or ``--json``) OpenAI's verbose_json, rendered by the same functions as
``/v1/audio/transcriptions``. ``--language`` names the spoken language, ``--translate`` asks a
Whisper model for English, ``--initial-prompt`` steers spelling, ``--temperature`` samples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corral.cli.context import Context, cli_runtime
from corral.cli.output import print_json
from corral.errors import UsageError
from corral.models.store import Entry
from corral.protocols.openai.audio import clock, srt, verbose_json, vtt
from corral.protocols.openai.languages import language_code
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import TIMESTAMPS, Audio, Task, TranscribeRequest, TranscribeResult

FORMATS = ("text", "srt", "vtt", "json")


def register_flags(p: argparse.ArgumentParser) -> None:
    """`run`'s flags for speech recognition models."""
    p.add_argument("--timestamps", choices=TIMESTAMPS[1:], help="speech recognition: show each segment or each "
                   "word with its start and end (json: also the words)")
    p.add_argument("--format", choices=FORMATS, dest="transcript_format", help="speech recognition: the "
                   "transcript as text (default), srt or vtt subtitles, or json (OpenAI's verbose_json)")
    p.add_argument("--language", help="speech recognition: the spoken language (ISO-639-1 code, e.g. en; "
                   "default: detected)")
    p.add_argument("--translate", action="store_true", help="speech recognition: translate into English (Whisper)")
    p.add_argument("--initial-prompt", help="speech recognition: text that steers spelling and style (Whisper)")


def read_audio(name: str | None, ctx: Context) -> Audio:
    """The audio in the file ``name`` (``-``: stdin), decoded and checked."""
    from corral.audio import decode_audio

    if name is None:
        raise UsageError("a speech recognition model needs audio: a file path, or - to read it from stdin",
                         "corral run MODEL speech.wav")
    if name == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"no such audio file: {path}")
        data = path.read_bytes()
    return decode_audio(data, max_seconds=ctx.settings.runtime.max_audio_seconds)


def run_transcribe(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    fmt = "json" if args.json else args.transcript_format or "text"
    timestamps = args.timestamps or ("segment" if fmt in ("srt", "vtt", "json") else "none")
    temperature = args.temperature or 0.0
    if not 0 <= temperature <= 1:
        raise UsageError("--temperature must be from 0 to 1 for speech recognition")
    request = TranscribeRequest(read_audio(args.prompt, ctx), None if args.translate else language_code(args.language),
                                args.initial_prompt, args.translate, timestamps, temperature)
    with cli_runtime(args, ctx) as runtime:
        result: TranscribeResult = runtime.call(Task.TRANSCRIBE, entry.name, request, CallInfo(Door.CLI, "run"))
    if fmt == "json":
        grains = ("segment", "word") if timestamps == "word" else ("segment",)
        print_json(verbose_json(result, grains, "translate" if args.translate else "transcribe"))
    elif fmt in ("srt", "vtt"):
        sys.stdout.write(srt(result) if fmt == "srt" else vtt(result))
    else:
        sys.stdout.write(_text(result, timestamps))
    return 0


def _text(result: TranscribeResult, timestamps: str) -> str:
    if timestamps == "word":
        return "".join(f"[{clock(w.start, '.')} --> {clock(w.end, '.')}] {w.text.strip()}\n"
                       for s in result.segments for w in s.words)
    if timestamps == "segment":
        return "".join(f"[{clock(s.start, '.')} --> {clock(s.end, '.')}] {s.text.strip()}\n" for s in result.segments)
    return result.text + "\n"
