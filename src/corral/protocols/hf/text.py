"""Text tasks in the Hugging Face Inference API's shapes: text and zero-shot classification
(labels with scores, best first), feature extraction (vectors; image-text models also embed
``{"image": ...}`` items, see protocols.embed_inputs), sentence similarity (cosine
scores) and extractive question answering (answer, score, start, end). Each takes the
request's ``inputs`` and ``parameters`` and returns the JSON value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.protocols.embed_inputs import embed_inputs
from corral.tasks import (
    AnswerQuestionRequest,
    AnswerQuestionResult,
    ClassifyTextRequest,
    ClassifyTextResult,
    EmbedRequest,
    EmbedResult,
    Task,
)
from corral.wire import embedding_vectors

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

MAX_INPUTS = 256


def texts(inputs: Any, what: str = "inputs") -> tuple[list[str], bool]:
    """(texts, whether one string was given) of a string or a list of strings."""
    single = isinstance(inputs, str)
    items = [inputs] if single else inputs
    if not isinstance(items, list) or not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise UsageError(f"{what} must be a non-empty string or a list of non-empty strings")
    if len(items) > MAX_INPUTS:
        raise UsageError(f"{what} may hold at most {MAX_INPUTS} strings", "split them into several requests")
    return items, single


def _top_k(parameters: dict[str, Any]) -> int | None:
    k = parameters.get("top_k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise UsageError("parameters.top_k must be a positive integer")
    return k


def _scored(pairs: list[tuple[str, float]], top_k: int | None = None) -> list[dict[str, Any]]:
    return [{"label": label, "score": score} for label, score in pairs[:top_k]]


async def text_classification(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                              call: CallInfo) -> list[list[dict[str, Any]]]:
    items, _ = texts(inputs)
    top_k = _top_k(parameters)
    result: ClassifyTextResult = await runtime.call(Task.CLASSIFY_TEXT, model, ClassifyTextRequest(tuple(items)), call)
    return [_scored(labels, top_k) for labels in result.labels]  # a list per input, as the client reads it


async def zero_shot_classification(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                                   call: CallInfo) -> Any:
    items, single = texts(inputs)
    labels = parameters.get("candidate_labels")
    if isinstance(labels, str):
        labels = [x.strip() for x in labels.split(",") if x.strip()]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise UsageError("zero-shot classification needs parameters.candidate_labels: a list of labels")
    template = parameters.get("hypothesis_template") or "This example is {}."
    if not isinstance(template, str) or "{}" not in template:
        raise UsageError('parameters.hypothesis_template must be a string with "{}" where the label goes')
    request = ClassifyTextRequest(tuple(items), tuple(labels), bool(parameters.get("multi_label", False)), template)
    result: ClassifyTextResult = await runtime.call(Task.CLASSIFY_TEXT, model, request, call)
    out = [_scored(scored) for scored in result.labels]
    return out[0] if single else out


async def feature_extraction(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                             call: CallInfo) -> Any:
    """A vector per input: strings, and (image-text models) ``{"text": ...}`` / ``{"image": ...}`` items or
    a body that is an image."""
    items, single = await embed_inputs(inputs, runtime, field="inputs", max_inputs=MAX_INPUTS, blank=False)
    normalize = parameters.get("normalize")
    request = EmbedRequest(items, normalize=True if normalize is None else bool(normalize))
    result: EmbedResult = await runtime.call(Task.EMBED, model, request, call)
    dims = parameters.get("dimensions")
    vectors = embedding_vectors(result, dims if isinstance(dims, int) and dims > 0 else None, model)
    return vectors[0] if single else vectors


async def sentence_similarity(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                              call: CallInfo) -> list[float]:
    if not isinstance(inputs, dict):
        raise UsageError('sentence similarity takes inputs {"source_sentence": ..., "sentences": [...]}')
    source, _ = texts(inputs.get("source_sentence"), "inputs.source_sentence")
    others, _ = texts(inputs.get("sentences"), "inputs.sentences")
    result: EmbedResult = await runtime.call(Task.EMBED, model, EmbedRequest((source[0], *others)), call)
    vectors = embedding_vectors(result)  # unit length: the dot product is the cosine
    return [float(x) for x in vectors[1:] @ vectors[0]]


def _positive(parameters: dict[str, Any], name: str, default: int) -> int:
    value = parameters.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"parameters.{name} must be a positive integer")
    return value


def qa_items(inputs: Any) -> tuple[list[tuple[str, str]], bool]:
    """(question, context) pairs of ``{"question", "context"}`` or a list of them."""
    single = isinstance(inputs, dict)
    items = [inputs] if single else inputs
    if not isinstance(items, list) or not items or len(items) > MAX_INPUTS:
        raise UsageError(f'question answering takes inputs {{"question": ..., "context": ...}} or a list of up to '
                         f"{MAX_INPUTS} of them")
    pairs = []
    for item in items:
        question, context = (item.get("question"), item.get("context")) if isinstance(item, dict) else (None, None)
        if not isinstance(question, str) or not question.strip():
            raise UsageError("inputs.question must be a non-empty string")
        if not isinstance(context, str) or not context.strip():
            raise UsageError("inputs.context must be a non-empty string: the text the answer is taken from")
        pairs.append((question, context))
    return pairs, single


async def question_answering(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                             call: CallInfo) -> Any:
    items, single = qa_items(inputs)
    top_k = _positive(parameters, "top_k", 1)
    request = AnswerQuestionRequest(tuple(items), top_k, _positive(parameters, "max_answer_len", 30))
    result: AnswerQuestionResult = await runtime.call(Task.ANSWER_QUESTION, model, request, call)
    shaped = [[{"answer": a.text, "score": a.score, "start": a.start, "end": a.end} for a in answers]
              for answers in result.answers]
    per_item = [rows[0] if top_k == 1 and rows else rows for rows in shaped]
    return per_item[0] if single else per_item
