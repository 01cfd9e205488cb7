"""Text tasks in the Hugging Face Inference API's shapes: text and zero-shot classification
(labels with scores, best first), feature extraction (vectors) and sentence similarity (cosine
scores). Each takes the request's ``inputs`` and ``parameters`` and returns the JSON value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.tasks import ClassifyTextRequest, ClassifyTextResult, EmbedRequest, EmbedResult, Task
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
    items, single = texts(inputs)
    normalize = parameters.get("normalize")
    request = EmbedRequest(tuple(items), normalize=True if normalize is None else bool(normalize))
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
