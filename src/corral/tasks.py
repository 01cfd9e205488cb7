"""Tasks: the one internal vocabulary every transport and engine speaks.

A task is a name plus a spec in :data:`TASKS`: its request and result dataclasses, the handler
method that implements it, whether it streams and whether concurrent requests can share one
engine call. Transports translate into the request types; the engine table
(:mod:`corral.engines.table`) maps tasks to handlers. Adding a runnable task is a ``TASKS`` entry,
an engine implementation and a door mapping. Generation tasks stream: they yield
:class:`TextChunk` objects, the last of which carries the finish reason and the usage figures.
Tasks without a spec are known (inspection reports them) but not yet runnable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Task(StrEnum):
    CHAT = "chat"
    COMPLETE = "complete"
    EMBED = "embed"
    RERANK = "rerank"
    CLASSIFY_TEXT = "classify_text"
    CLASSIFY_TOKENS = "classify_tokens"  # NER, POS
    TRANSLATE = "translate"
    SUMMARIZE = "summarize"
    ANSWER_QUESTION = "answer_question"
    CLASSIFY_IMAGE = "classify_image"
    DETECT_OBJECTS = "detect_objects"
    SEGMENT_IMAGE = "segment_image"
    GENERATE_IMAGE = "generate_image"
    DESCRIBE_IMAGE = "describe_image"
    TRANSCRIBE = "transcribe"
    SPEAK = "speak"
    CLASSIFY_AUDIO = "classify_audio"
    CLASSIFY_VIDEO = "classify_video"
    GENERATE_VIDEO = "generate_video"


ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by chat and completion, and their defaults for every door that
    has none of its own (the CLI; the OpenAI door keeps OpenAI's). ``temperature == 0`` is greedy."""

    max_tokens: int = 512
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()

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
class EmbedRequest:
    inputs: tuple[str, ...]
    normalize: bool = True


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
    scores: Sequence[float]  # relevance in [0, 1], one per pair, in the request's order
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
    images: tuple[Any, ...]  # decoded RGB images (PIL), checked by the door (corral.media)


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
    label: str
    score: float  # the mean probability of the label over the segment's pixels
    mask: bytes  # a PNG of the input image's size: 255 inside the segment, 0 outside


@dataclass(frozen=True)
class SegmentImageRequest:
    images: tuple[Any, ...]


@dataclass(frozen=True)
class SegmentImageResult:
    segments: list[list[Segment]]  # per image, largest first
    usage: Usage = field(default_factory=Usage)
    input_tokens: list[int] = field(default_factory=list)


def _shares(total: Usage, tokens: list[int], sizes: list[int]) -> list[tuple[Usage, list[int]]]:
    """Each request's usage out of a merged call's: its inputs' token counts where the engine gave
    them per input, else the total split by input count."""
    out, start, inputs = [], 0, sum(sizes) or 1
    for n in sizes:
        if tokens:
            mine = tokens[start:start + n]
            out.append((Usage(prompt_tokens=sum(mine)), mine))
        else:
            out.append((Usage(prompt_tokens=round(total.prompt_tokens * n / inputs)), []))
        start += n
    return out


def _inputs(request: Any) -> int:
    return len(request.inputs)


def _split(rows: str, size: Callable[[Any], int] = _inputs) -> Callable[[Any, Sequence[Any]], list[Any]]:
    """A merged result split back per request: its ``rows`` field (one row per input), usage and
    per-input token counts cut at each request's ``size`` inputs."""
    def split(result: Any, requests: Sequence[Any]) -> list[Any]:
        sizes = [size(r) for r in requests]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        every = getattr(result, rows)
        return [replace(result, **{rows: every[a:a + n]}, usage=usage, input_tokens=tokens)
                for a, n, (usage, tokens) in zip(starts, sizes, _shares(result.usage, result.input_tokens, sizes),
                                                  strict=True)]
    return split


@dataclass(frozen=True)
class BatchRule:
    """How concurrent requests of a task share one engine call: requests with the same ``key``
    are merged into one request, whose result is split back into one result each."""

    size: Callable[[Any], int]  # inputs in a request (a batch holds at most the batcher's maximum)
    merge: Callable[[Sequence[Any]], Any]
    split: Callable[[Any, Sequence[Any]], list[Any]]
    key: Callable[[Any], object] = lambda request: None


EMBED_BATCH = BatchRule(size=_inputs, key=lambda r: r.normalize, split=_split("vectors"),
                        merge=lambda rs: EmbedRequest(tuple(t for r in rs for t in r.inputs), rs[0].normalize))
CLASSIFY_TEXT_BATCH = BatchRule(
    size=_inputs, split=_split("labels"),
    key=lambda r: (r.labels, r.multi_label, r.hypothesis_template),
    merge=lambda rs: replace(rs[0], inputs=tuple(t for r in rs for t in r.inputs)))
ANSWER_BATCH = BatchRule(
    size=lambda r: len(r.items), split=_split("answers", lambda r: len(r.items)),
    key=lambda r: (r.top_k, r.max_answer_len),
    merge=lambda rs: replace(rs[0], items=tuple(i for r in rs for i in r.items)))
CLASSIFY_IMAGE_BATCH = BatchRule(
    size=lambda r: len(r.images), split=_split("labels", lambda r: len(r.images)),
    merge=lambda rs: ClassifyImageRequest(tuple(i for r in rs for i in r.images)))
DETECT_BATCH = BatchRule(
    size=lambda r: len(r.images), split=_split("detections", lambda r: len(r.images)), key=lambda r: r.threshold,
    merge=lambda rs: DetectObjectsRequest(tuple(i for r in rs for i in r.images), rs[0].threshold))
SEGMENT_BATCH = BatchRule(
    size=lambda r: len(r.images), split=_split("segments", lambda r: len(r.images)),
    merge=lambda rs: SegmentImageRequest(tuple(i for r in rs for i in r.images)))
RERANK_BATCH = BatchRule(size=lambda r: len(r.pairs), split=_split("scores", lambda r: len(r.pairs)),
                         merge=lambda rs: RerankRequest(tuple(p for r in rs for p in r.pairs)))
TOKENS_BATCH = BatchRule(size=_inputs, key=lambda r: r.aggregation, split=_split("entities"),
                         merge=lambda rs: ClassifyTokensRequest(tuple(t for r in rs for t in r.inputs),
                                                                rs[0].aggregation))


@dataclass(frozen=True)
class TaskSpec:
    request: type
    result: type  # of the whole call; a streaming task yields these
    method: str  # the handler method that implements it
    streams: bool = False
    batch: BatchRule | None = None  # concurrent requests may share one engine call

    @property
    def batchable(self) -> bool:
        return self.batch is not None


TASKS: dict[Task, TaskSpec] = {
    Task.CHAT: TaskSpec(ChatRequest, TextChunk, "chat", streams=True),
    Task.COMPLETE: TaskSpec(CompletionRequest, TextChunk, "complete", streams=True),
    Task.EMBED: TaskSpec(EmbedRequest, EmbedResult, "embed", batch=EMBED_BATCH),
    Task.RERANK: TaskSpec(RerankRequest, RerankResult, "rerank", batch=RERANK_BATCH),
    Task.CLASSIFY_IMAGE: TaskSpec(ClassifyImageRequest, ClassifyImageResult, "classify_image",
                                  batch=CLASSIFY_IMAGE_BATCH),
    Task.DETECT_OBJECTS: TaskSpec(DetectObjectsRequest, DetectObjectsResult, "detect_objects", batch=DETECT_BATCH),
    Task.SEGMENT_IMAGE: TaskSpec(SegmentImageRequest, SegmentImageResult, "segment_image", batch=SEGMENT_BATCH),
    Task.TRANSLATE: TaskSpec(TranslateRequest, TextChunk, "translate", streams=True),
    Task.DESCRIBE_IMAGE: TaskSpec(DescribeImageRequest, TextChunk, "describe_image", streams=True),
    Task.SUMMARIZE: TaskSpec(SummarizeRequest, TextChunk, "summarize", streams=True),
    Task.CLASSIFY_TEXT: TaskSpec(ClassifyTextRequest, ClassifyTextResult, "classify_text", batch=CLASSIFY_TEXT_BATCH),
    Task.ANSWER_QUESTION: TaskSpec(AnswerQuestionRequest, AnswerQuestionResult, "answer_question", batch=ANSWER_BATCH),
    Task.CLASSIFY_TOKENS: TaskSpec(ClassifyTokensRequest, ClassifyTokensResult, "classify_tokens",
                                   batch=TOKENS_BATCH),
}
