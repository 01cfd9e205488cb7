"""What an export of each engine needs, as data: the serve.py template, the pip distributions the
server imports (pinned with everything they pull in), the system packages of its image, and whether
the engine has a CUDA build (then ``requirements-cuda.txt`` and ``Dockerfile.cuda`` are written).
Engines without a row (``remote``) cannot be exported. Importing this module imports no engine."""

from __future__ import annotations

from dataclasses import dataclass

from corral.tasks import Task


@dataclass(frozen=True)
class ExportSpec:
    template: str  # templates/engine_<template>.py.j2
    roots: tuple[str, ...]  # distributions serve.py imports; their installed dependencies are pinned too
    apt: tuple[str, ...] = ()  # Debian packages of the image
    torch: bool = False  # torch from the CPU wheel index in Dockerfile
    # the CUDA build: distribution -> its CUDA replacement ("" = the same distribution, built or wheeled for
    # CUDA); None = no CUDA build, no Dockerfile.cuda
    cuda: dict[str, str] | None = None
    build_from_source: bool = False  # the CUDA build compiles (llama.cpp): a devel base image
    # extra distributions a task needs (decoders of its media)
    task_roots: tuple[tuple[Task, tuple[str, ...]], ...] = ()


AUDIO_IN = ("soundfile", "soxr")  # decoding and resampling a request's audio
AUDIO_OUT = ("numpy", "soundfile", "soxr")  # encoding speech (FLAC, MP3, Opus) and 24 kHz PCM
TORCH_CUDA = {"torch": ""}

EXPORTS: dict[str, ExportSpec] = {
    "llama_cpp": ExportSpec("llama", ("llama-cpp-python",), cuda={"llama-cpp-python": ""}, build_from_source=True),
    "sentence_transformers": ExportSpec("sentence", ("sentence-transformers", "torch"), torch=True,
                                        cuda=TORCH_CUDA),
    "transformers": ExportSpec(
        "transformers", ("transformers", "torch", "numpy", "pillow", "sentencepiece"), torch=True, cuda=TORCH_CUDA,
        task_roots=((Task.TRANSCRIBE, AUDIO_IN), (Task.CLASSIFY_AUDIO, AUDIO_IN), (Task.SPEAK, AUDIO_OUT),
                    (Task.CLASSIFY_VIDEO, ("av",)),
                    (Task.DESCRIBE_IMAGE, ("jinja2",)))),  # an image-text chat model's template renderer
    "diffusers": ExportSpec("diffusers", ("diffusers", "transformers", "torch", "pillow", "av"), torch=True,
                            cuda=TORCH_CUDA),
    "spacy": ExportSpec("spacy", ("spacy",)),
    "faster_whisper": ExportSpec("whisper", ("faster-whisper", "numpy", *AUDIO_IN), cuda={"ctranslate2": ""}),
    "pocketsphinx": ExportSpec("sphinx", ("pocketsphinx", "numpy", *AUDIO_IN)),
    "piper": ExportSpec("piper", ("piper-tts", "onnxruntime", *AUDIO_OUT), cuda={"onnxruntime": "onnxruntime-gpu"}),
    "espeak": ExportSpec("espeak", AUDIO_OUT, apt=("espeak-ng",)),
}
