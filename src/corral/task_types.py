"""The requests and results of every task, as frozen dataclasses: the shared generation fields
(:class:`Sampling`, :class:`Generation`), messages, streamed :class:`TextChunk` objects and usage,
and one request/result pair per one-shot task (embed, rerank, classification, NER, QA, the image
tasks). Pure data: no engine, no transport; :mod:`corral.tasks` says which task takes which."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ImagePart:
    """An image inside a chat message: a decoded RGB image (PIL), checked by the door."""

    image: Any


@dataclass(frozen=True)
class Message:
    role: str
    content: str  # the text (a message with images: its text parts joined)
    parts: tuple[str | ImagePart, ...] = ()  # a message with images: its text and images in order

    @property
    def images(self) -> tuple[Any, ...]:
        return tuple(p.image for p in self.parts if isinstance(p, ImagePart))


UNBOUNDED = 1 << 30  # max_tokens a door sends when none was asked for: until the model stops or the context ends


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by chat and completion, and their defaults for every door that
    has none of its own (the CLI; the OpenAI door keeps OpenAI's). ``temperature == 0`` is greedy."""

    max_tokens: int = 512
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_k: int | None = None  # None: the engine's default; 0: no top-k cut
    context: int | None = None  # prompt + output tokens this request may use (Ollama's num_ctx); None: the model's
    asked: bool = False  # max_tokens is the caller's own (checked against the model: 400), not a door's default
    given: frozenset[str] = frozenset()  # the fields the caller set itself: a preset's defaults fill the others

    def check(self, name: Callable[[str], str] = str) -> Sampling:
        """Itself, or a UsageError naming the field that is out of range (``name`` spells the
        field as the door knows it: ``--max-tokens`` on the CLI)."""
        from corral.errors import UsageError

        if self.max_tokens < 1:
            raise UsageError(f"{name('max_tokens')} must be at least 1")
        if not 0 <= self.temperature <= 2:
            raise UsageError(f"{name('temperature')} must be between 0 and 2")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"{name('top_p')} must be in (0, 1]")
        if self.context is not None and self.context < 1:
            raise UsageError(f"{name('context')} must be at least 1")
        if self.top_k is not None and self.top_k < 0:
            raise UsageError(f"{name('top_k')} must be 0 (no cut) or more")
        return self


DEFAULT_SAMPLING = Sampling()


@dataclass(frozen=True, kw_only=True)
class Generation:
    """The fields every text-generation request shares, declared once."""

    sampling: Sampling = field(default_factory=Sampling)
    json_schema: dict[str, Any] | None = None  # constrain the output to JSON matching this schema
    logprobs: int | None = None  # None: off; k >= 0: the chosen token's logprob and k alternatives


@dataclass(frozen=True)
class ChatRequest(Generation):
    messages: tuple[Message, ...]

    @property
    def images(self) -> tuple[Any, ...]:
        """Every image of the conversation, in order (a model that reads none refuses them)."""
        return tuple(image for m in self.messages for image in m.images)


@dataclass(frozen=True)
class CompletionRequest(Generation):
    prompt: str


@dataclass(frozen=True)
class TranslateRequest(Generation):
    """Text into another language; the languages as the model names them (codes such as ``fr`` or
    ``fra_Latn``, or for T5 names such as ``French``); a model for one language pair needs none."""

    text: str
    source_lang: str | None = None
    target_lang: str | None = None


@dataclass(frozen=True)
class SummarizeRequest(Generation):
    text: str


@dataclass(frozen=True)
class DescribeImageRequest(Generation):
    """A caption of an image (``prompt`` steers models that read one), streamed."""

    image: Any  # a decoded RGB image (PIL), checked by the door
    prompt: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TextChunk:
    """One piece of streamed text. The final chunk has ``finish_reason`` and ``usage`` set."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" | None while streaming
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class EmbedImage:
    """An image to embed, for models that put images and text in one space (CLIP, SigLIP): a decoded
    RGB image (PIL), checked by the door."""

    image: Any


@dataclass(frozen=True)
class EmbedRequest:
    inputs: tuple[str | EmbedImage, ...]  # texts and (image-text models) images, one vector each, in order
    normalize: bool = True

    @property
    def has_images(self) -> bool:
        return any(isinstance(item, EmbedImage) for item in self.inputs)

    def texts(self, model: str) -> tuple[str, ...]:
        """The inputs of a model that embeds text only; an image among them is refused naming ``model``."""
        if self.has_images:
            from corral.errors import UnsupportedTaskError

            raise UnsupportedTaskError(f"{model} embeds text only; it cannot embed images",
                                       "send text only, or use an image-text embedding model (CLIP, SigLIP)")
        return tuple(item for item in self.inputs if isinstance(item, str))


@dataclass(frozen=True)
class EmbedResult:
    vectors: Sequence[Sequence[float]]  # lists, or numpy rows from engines that have them
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)  # per input, where the engine knows


@dataclass(frozen=True)
class RerankRequest:
    """(query, document) pairs to score; one query's documents are :meth:`of` it."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, query: str, documents: Sequence[str]) -> RerankRequest:
        return cls(tuple((query, d) for d in documents))


@dataclass(frozen=True)
class RerankResult:
    scores: Sequence[float]  # relevance, one per pair, in the request's order: in [0, 1] unless a
    # CrossEncoder declares another activation (identity: raw logits)
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)  # per pair, where the engine knows


@dataclass(frozen=True)
class ClassifyTextRequest:
    """Texts to label with the model's own labels, or (zero-shot, through an NLI model) with
    ``labels``: each scored as the hypothesis ``hypothesis_template.format(label)``."""

    inputs: tuple[str, ...]
    labels: tuple[str, ...] = ()
    multi_label: bool = False  # zero-shot: each label scored on its own (else they compete)
    hypothesis_template: str = "This example is {}."


@dataclass(frozen=True)
class ClassifyTextResult:
    labels: list[list[tuple[str, float]]]  # per input: (label, score), best first
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)  # per input, where the engine knows


TOKEN_AGGREGATIONS = ("simple", "none")  # entities (B-X/I-X runs merged), or one entry per token


@dataclass(frozen=True)
class ClassifyTokensRequest:
    """Texts to label token by token (NER, POS). ``aggregation`` "simple" merges a run of tokens
    labelled B-X, I-X, ... (or X, X, ...) into one entity of label X; "none" gives every token."""

    inputs: tuple[str, ...]
    aggregation: str = "simple"

    def __post_init__(self) -> None:
        if self.aggregation not in TOKEN_AGGREGATIONS:
            from corral.errors import UsageError

            raise UsageError(f"unknown aggregation {self.aggregation!r}",
                             f"use one of: {', '.join(TOKEN_AGGREGATIONS)}")


@dataclass(frozen=True)
class Entity:
    """One labelled span: ``text == input[start:end]`` (character offsets into the input)."""

    text: str
    label: str  # the entity type ("PER"), or the token's own label ("B-PER") with aggregation "none"
    start: int
    end: int
    score: float  # in [0, 1]: the mean of the tokens' probabilities (1.0 where the engine gives none)
    index: int | None = None  # aggregation "none": the token's position in the model's input


@dataclass(frozen=True)
class ClassifyTokensResult:
    entities: list[list[Entity]]  # one list per input, in the request's order; each list in text order
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)  # per input, where the engine knows


@dataclass(frozen=True)
class AnswerQuestionRequest:
    """Extractive question answering: (question, context) pairs; answers are spans of the context."""

    items: tuple[tuple[str, str], ...]
    top_k: int = 1
    max_answer_len: int = 30  # tokens


@dataclass(frozen=True)
class Answer:
    text: str
    score: float
    start: int  # character offsets into the context: context[start:end] == text
    end: int


@dataclass(frozen=True)
class AnswerQuestionResult:
    answers: list[list[Answer]]  # per item, best first
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ClassifyImageRequest:
    """Images to label with the model's own labels, or (zero-shot, an image-text model such as CLIP)
    with ``labels``: each scored as the caption ``hypothesis_template.format(label)``."""

    images: tuple[Any, ...]  # decoded RGB images (PIL), checked by the door (corral.media)
    labels: tuple[str, ...] = ()
    hypothesis_template: str = "This is a photo of {}."


@dataclass(frozen=True)
class ClassifyImageResult:
    labels: list[list[tuple[str, float]]]  # per image: (label, score), best first
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax in pixels of the input image


@dataclass(frozen=True)
class DetectObjectsRequest:
    images: tuple[Any, ...]
    threshold: float = 0.5


@dataclass(frozen=True)
class DetectObjectsResult:
    detections: list[list[Detection]]  # per image, best first
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Segment:
    """One segment. ``score``: semantic, the label's mean probability over the segment's pixels (a
    universal head's per-pixel label scores normalised to sum to one); instance and panoptic, the
    score the model's post-processing gives the segment (class probability x mask quality)."""

    label: str
    score: float
    mask: bytes  # a PNG of the input image's size (mode L): 255 inside the segment, 0 outside


SEGMENT_SUBTASKS = ("semantic", "instance", "panoptic")


@dataclass(frozen=True)
class SegmentImageRequest:
    """Images to segment. ``subtask`` None is the model's own: semantic for a semantic head,
    panoptic for a universal one (Mask2Former, MaskFormer, DETR panoptic), as Hugging Face's
    pipeline picks. The thresholds are the Hugging Face image-segmentation task's (instance and
    panoptic only): ``threshold`` drops segments scored lower, ``mask_threshold`` binarises the
    mask probabilities, ``overlap_mask_area_threshold`` drops a segment whose visible part is a
    smaller share of its own mask."""

    images: tuple[Any, ...]
    subtask: str | None = None
    threshold: float = 0.9
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.5

    def __post_init__(self) -> None:
        from corral.errors import UsageError

        if self.subtask is not None and self.subtask not in SEGMENT_SUBTASKS:
            raise UsageError(f"unknown segmentation subtask {self.subtask!r}",
                             f"use one of: {', '.join(SEGMENT_SUBTASKS)}")
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise UsageError(f"{name} must be a number from 0 to 1")


@dataclass(frozen=True)
class SegmentImageResult:
    segments: list[list[Segment]]  # per image: semantic largest first, instance and panoptic best first
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)
