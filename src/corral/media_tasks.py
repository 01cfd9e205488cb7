"""The requests and results of the audio, video and generation tasks, as frozen dataclasses:
decoded :class:`Audio` and :class:`Video` (checked by the door before any model), transcription,
speech, audio and video classification, and image and video generation (streamed as
:class:`Progress` steps, then the result). Pure data: no engine, no transport; :mod:`corral.tasks`
says which task takes which (and re-exports them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.task_types import Usage

TIMESTAMPS = ("none", "segment", "word")


@dataclass(frozen=True)
class Audio:
    """Decoded audio: mono float32 samples in [-1, 1] at ``sample_rate`` (a numpy array)."""

    samples: Any
    sample_rate: int

    @property
    def duration(self) -> float:
        return float(len(self.samples)) / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class Video:
    """Decoded video: frames as RGB images (PIL), sampled from the clip, and its frame rate."""

    frames: tuple[Any, ...]
    fps: float
    duration: float  # seconds of the whole clip


@dataclass(frozen=True)
class TranscribeRequest:
    """Speech to text. ``language``: the spoken language's code (None: the model detects it);
    ``prompt``: text that steers spelling and style (Whisper); ``translate``: into English
    (Whisper); ``timestamps``: none, segment or word."""

    audio: Audio
    language: str | None = None
    prompt: str | None = None
    translate: bool = False
    timestamps: str = "none"
    temperature: float = 0.0


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float | None = None


@dataclass(frozen=True)
class TranscriptSegment:
    """A stretch of the transcript; Whisper engines also give its decoding figures (OpenAI's
    verbose_json reports them), others leave them None."""

    start: float  # seconds
    end: float
    text: str
    words: tuple[Word, ...] = ()
    tokens: tuple[int, ...] = ()
    seek: int | None = None  # Whisper: the window's offset in 10 ms frames
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


@dataclass(frozen=True)
class TranscribeResult:
    text: str
    language: str | None  # detected or given
    duration: float  # seconds of audio
    segments: tuple[TranscriptSegment, ...] = ()
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SpeakRequest:
    """Text to speech. ``voice``: one of the model's voices (None: its default); ``speed``: 1.0 is
    the model's own pace."""

    text: str
    voice: str | None = None
    speed: float = 1.0


@dataclass(frozen=True)
class AudioChunk:
    """A piece of synthesised speech, streamed in order; the last one carries ``usage``
    (``prompt_tokens``: the characters spoken)."""

    samples: Any  # float32 mono, in [-1, 1]
    sample_rate: int
    usage: Usage | None = None


@dataclass(frozen=True)
class ClassifyAudioRequest:
    audios: tuple[Audio, ...]


@dataclass(frozen=True)
class ClassifyAudioResult:
    labels: list[list[tuple[str, float]]]  # per clip, best first
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ClassifyVideoRequest:
    videos: tuple[Video, ...]


@dataclass(frozen=True)
class ClassifyVideoResult:
    labels: list[list[tuple[str, float]]]  # per clip, best first
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    """One step of long work done (a diffusion step), streamed before the result."""

    step: int
    steps: int


@dataclass(frozen=True)
class GenerateImageRequest:
    """Text to image. Sizes in pixels (None: the pipeline's default); ``steps`` and ``guidance``
    None: the pipeline's defaults; ``seed`` makes the images reproducible."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    n: int = 1
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class GenerateImageResult:
    images: tuple[Any, ...]  # RGB PIL images
    seed: int | None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class GenerateVideoRequest:
    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int = 8
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class GenerateVideoResult:
    frames: tuple[Any, ...]  # RGB PIL images
    fps: int
    seed: int | None
    usage: Usage = field(default_factory=Usage)
