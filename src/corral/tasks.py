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
from dataclasses import dataclass, field
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


def _split_embed(result: EmbedResult, requests: Sequence[EmbedRequest]) -> list[EmbedResult]:
    sizes = [len(r.inputs) for r in requests]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [EmbedResult(result.vectors[a:a + n], usage, tokens)
            for a, n, (usage, tokens) in zip(starts, sizes, _shares(result.usage, result.input_tokens, sizes),
                                              strict=True)]


def _split_rerank(result: RerankResult, requests: Sequence[RerankRequest]) -> list[RerankResult]:
    sizes = [len(r.pairs) for r in requests]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [RerankResult(result.scores[a:a + n], usage, tokens)
            for a, n, (usage, tokens) in zip(starts, sizes, _shares(result.usage, result.input_tokens, sizes),
                                              strict=True)]


def _split_tokens(result: ClassifyTokensResult,
                  requests: Sequence[ClassifyTokensRequest]) -> list[ClassifyTokensResult]:
    sizes = [len(r.inputs) for r in requests]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [ClassifyTokensResult(result.entities[a:a + n], usage, tokens)
            for a, n, (usage, tokens) in zip(starts, sizes, _shares(result.usage, result.input_tokens, sizes),
                                              strict=True)]


@dataclass(frozen=True)
class BatchRule:
    """How concurrent requests of a task share one engine call: requests with the same ``key``
    are merged into one request, whose result is split back into one result each."""

    size: Callable[[Any], int]  # inputs in a request (a batch holds at most the batcher's maximum)
    merge: Callable[[Sequence[Any]], Any]
    split: Callable[[Any, Sequence[Any]], list[Any]]
    key: Callable[[Any], object] = lambda request: None


EMBED_BATCH = BatchRule(size=lambda r: len(r.inputs), key=lambda r: r.normalize, split=_split_embed,
                        merge=lambda rs: EmbedRequest(tuple(t for r in rs for t in r.inputs), rs[0].normalize))
RERANK_BATCH = BatchRule(size=lambda r: len(r.pairs), split=_split_rerank,
                         merge=lambda rs: RerankRequest(tuple(p for r in rs for p in r.pairs)))
TOKENS_BATCH = BatchRule(size=lambda r: len(r.inputs), key=lambda r: r.aggregation, split=_split_tokens,
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
    Task.CLASSIFY_TOKENS: TaskSpec(ClassifyTokensRequest, ClassifyTokensResult, "classify_tokens",
                                   batch=TOKENS_BATCH),
}
