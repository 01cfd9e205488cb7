"""Tasks: the one internal vocabulary every transport and engine speaks.

A task is a name plus a spec in :data:`TASKS`: its request and result dataclasses, the handler
method that implements it, whether it streams and whether concurrent requests can share one
engine call. Transports translate into the request types; the engine table
(:mod:`corral.engines.table`) maps tasks to handlers. Adding a runnable task is a ``TASKS`` entry,
an engine implementation and a door mapping. Generation tasks stream: they yield
:class:`TextChunk` objects, the last of which carries the finish reason and the usage figures.
Tasks without a spec are known (inspection reports them) but not yet runnable. The request and
result types live in :mod:`corral.task_types` (text and images) and :mod:`corral.media_tasks`
(audio, video, generation) and are re-exported here. Speech streams :class:`AudioChunk` objects;
image and video generation stream :class:`Progress` steps, then their result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from corral.media_tasks import (
    TIMESTAMPS,
    Audio,
    AudioChunk,
    ClassifyAudioRequest,
    ClassifyAudioResult,
    ClassifyVideoRequest,
    ClassifyVideoResult,
    GenerateImageRequest,
    GenerateImageResult,
    GenerateVideoRequest,
    GenerateVideoResult,
    Progress,
    SpeakRequest,
    TranscribeRequest,
    TranscribeResult,
    TranscriptSegment,
    Video,
    Word,
)
from corral.task_types import (
    DEFAULT_SAMPLING,
    ROLES,
    SEGMENT_SUBTASKS,
    TOKEN_AGGREGATIONS,
    Answer,
    AnswerQuestionRequest,
    AnswerQuestionResult,
    ChatRequest,
    ClassifyImageRequest,
    ClassifyImageResult,
    ClassifyTextRequest,
    ClassifyTextResult,
    ClassifyTokensRequest,
    ClassifyTokensResult,
    CompletionRequest,
    DescribeImageRequest,
    Detection,
    DetectObjectsRequest,
    DetectObjectsResult,
    EmbedImage,
    EmbedRequest,
    EmbedResult,
    Entity,
    Generation,
    ImagePart,
    Message,
    RerankRequest,
    RerankResult,
    Sampling,
    Segment,
    SegmentImageRequest,
    SegmentImageResult,
    SummarizeRequest,
    TextChunk,
    TokenLogprob,
    TranslateRequest,
    Usage,
)

__all__ = [
    "DEFAULT_SAMPLING",
    "ROLES",
    "SEGMENT_SUBTASKS",
    "TASKS",
    "TIMESTAMPS",
    "TOKEN_AGGREGATIONS",
    "Answer",
    "AnswerQuestionRequest",
    "AnswerQuestionResult",
    "Audio",
    "AudioChunk",
    "BatchRule",
    "ChatRequest",
    "ClassifyAudioRequest",
    "ClassifyAudioResult",
    "ClassifyImageRequest",
    "ClassifyImageResult",
    "ClassifyTextRequest",
    "ClassifyTextResult",
    "ClassifyTokensRequest",
    "ClassifyTokensResult",
    "ClassifyVideoRequest",
    "ClassifyVideoResult",
    "CompletionRequest",
    "DescribeImageRequest",
    "DetectObjectsRequest",
    "DetectObjectsResult",
    "Detection",
    "EmbedImage",
    "EmbedRequest",
    "EmbedResult",
    "Entity",
    "GenerateImageRequest",
    "GenerateImageResult",
    "GenerateVideoRequest",
    "GenerateVideoResult",
    "Generation",
    "ImagePart",
    "Message",
    "Progress",
    "RerankRequest",
    "RerankResult",
    "Sampling",
    "Segment",
    "SegmentImageRequest",
    "SegmentImageResult",
    "SpeakRequest",
    "SummarizeRequest",
    "Task",
    "TaskSpec",
    "TextChunk",
    "TokenLogprob",
    "TranscribeRequest",
    "TranscribeResult",
    "TranscriptSegment",
    "TranslateRequest",
    "Usage",
    "Video",
    "Word",
]


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


# texts and images (an image-text model) merge into one call; the handler embeds each kind in its own passes
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
    key=lambda r: (r.labels, r.hypothesis_template),
    merge=lambda rs: replace(rs[0], images=tuple(i for r in rs for i in r.images)))
DETECT_BATCH = BatchRule(
    size=lambda r: len(r.images), split=_split("detections", lambda r: len(r.images)), key=lambda r: r.threshold,
    merge=lambda rs: DetectObjectsRequest(tuple(i for r in rs for i in r.images), rs[0].threshold))
SEGMENT_BATCH = BatchRule(
    size=lambda r: len(r.images), split=_split("segments", lambda r: len(r.images)),
    key=lambda r: (r.subtask, r.threshold, r.mask_threshold, r.overlap_mask_area_threshold),
    merge=lambda rs: replace(rs[0], images=tuple(i for r in rs for i in r.images)))
RERANK_BATCH = BatchRule(size=lambda r: len(r.pairs), split=_split("scores", lambda r: len(r.pairs)),
                         merge=lambda rs: RerankRequest(tuple(p for r in rs for p in r.pairs)))
TOKENS_BATCH = BatchRule(size=_inputs, key=lambda r: r.aggregation, split=_split("entities"),
                         merge=lambda rs: ClassifyTokensRequest(tuple(t for r in rs for t in r.inputs),
                                                                rs[0].aggregation))

CLASSIFY_AUDIO_BATCH = BatchRule(
    size=lambda r: len(r.audios), split=_split("labels", lambda r: len(r.audios)),
    merge=lambda rs: ClassifyAudioRequest(tuple(a for r in rs for a in r.audios)))
CLASSIFY_VIDEO_BATCH = BatchRule(
    size=lambda r: len(r.videos), split=_split("labels", lambda r: len(r.videos)),
    merge=lambda rs: ClassifyVideoRequest(tuple(v for r in rs for v in r.videos)))
# each request its own engine call, queued on the model's engine thread (a long transcription)
ALONE = BatchRule(size=lambda r: 1, key=id, merge=lambda rs: rs[0], split=lambda result, rs: [result])


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
    Task.TRANSCRIBE: TaskSpec(TranscribeRequest, TranscribeResult, "transcribe", batch=ALONE),
    Task.SPEAK: TaskSpec(SpeakRequest, AudioChunk, "speak", streams=True),
    Task.CLASSIFY_AUDIO: TaskSpec(ClassifyAudioRequest, ClassifyAudioResult, "classify_audio",
                                  batch=CLASSIFY_AUDIO_BATCH),
    Task.CLASSIFY_VIDEO: TaskSpec(ClassifyVideoRequest, ClassifyVideoResult, "classify_video",
                                  batch=CLASSIFY_VIDEO_BATCH),
    Task.GENERATE_IMAGE: TaskSpec(GenerateImageRequest, GenerateImageResult, "generate_image", streams=True),
    Task.GENERATE_VIDEO: TaskSpec(GenerateVideoRequest, GenerateVideoResult, "generate_video", streams=True),
}
