"""One model URL, many tasks: which Hugging Face task a request is, from the model's served tasks,
the payload's shape, or the task named in the URL (``/models/{name}/pipeline/{task}``); then the
task's handler turns ``inputs`` and ``parameters`` into a runtime call and the answer into the
shape the client parses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import UnsupportedTaskError, UsageError
from corral.protocols.hf import diffusion, generation, media, speech, text, tokens, tts, vision
from corral.tasks import Task

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

Run = Callable[["Runtime", str, Any, dict[str, Any], "CallInfo"], Awaitable[Any]]
Start = Callable[["Runtime", str, Any, dict[str, Any], "CallInfo"], "generation.GenerationRun"]


@dataclass(frozen=True)
class HFTask:
    task: Task  # the corral task that serves it
    run: Run
    start: Start | None = None  # a generation task: its generations, to stream (the sidecar)


HF_TASKS: dict[str, HFTask] = {
    "text-classification": HFTask(Task.CLASSIFY_TEXT, text.text_classification),
    "zero-shot-classification": HFTask(Task.CLASSIFY_TEXT, text.zero_shot_classification),
    "token-classification": HFTask(Task.CLASSIFY_TOKENS, tokens.token_classification),
    "feature-extraction": HFTask(Task.EMBED, text.feature_extraction),
    "sentence-similarity": HFTask(Task.EMBED, text.sentence_similarity),
    "question-answering": HFTask(Task.ANSWER_QUESTION, text.question_answering),
    "translation": HFTask(Task.TRANSLATE, generation.translation, generation.start_translation),
    "summarization": HFTask(Task.SUMMARIZE, generation.summarization, generation.start_summarization),
    "image-classification": HFTask(Task.CLASSIFY_IMAGE, vision.image_classification),
    "zero-shot-image-classification": HFTask(Task.CLASSIFY_IMAGE, vision.zero_shot_image_classification),
    "object-detection": HFTask(Task.DETECT_OBJECTS, vision.object_detection),
    "image-segmentation": HFTask(Task.SEGMENT_IMAGE, vision.image_segmentation),
    "image-to-text": HFTask(Task.DESCRIBE_IMAGE, vision.image_to_text, vision.start_image_to_text),
    "audio-classification": HFTask(Task.CLASSIFY_AUDIO, media.audio_classification),
    "video-classification": HFTask(Task.CLASSIFY_VIDEO, media.video_classification),
    "automatic-speech-recognition": HFTask(Task.TRANSCRIBE, speech.automatic_speech_recognition),
    "text-to-speech": HFTask(Task.SPEAK, tts.text_to_speech),
    "text-to-image": HFTask(Task.GENERATE_IMAGE, diffusion.text_to_image),
    "text-to-video": HFTask(Task.GENERATE_VIDEO, diffusion.text_to_video),
}
DEFAULT_FOR: dict[Task, str] = {Task.CLASSIFY_TEXT: "text-classification", Task.EMBED: "feature-extraction",
                                Task.CLASSIFY_TOKENS: "token-classification",
                                Task.ANSWER_QUESTION: "question-answering", Task.TRANSLATE: "translation",
                                Task.SUMMARIZE: "summarization", Task.CLASSIFY_IMAGE: "image-classification",
                                Task.DETECT_OBJECTS: "object-detection", Task.SEGMENT_IMAGE: "image-segmentation",
                                Task.DESCRIBE_IMAGE: "image-to-text", Task.CLASSIFY_AUDIO: "audio-classification",
                                Task.CLASSIFY_VIDEO: "video-classification",
                                Task.TRANSCRIBE: "automatic-speech-recognition", Task.SPEAK: "text-to-speech",
                                Task.GENERATE_IMAGE: "text-to-image", Task.GENERATE_VIDEO: "text-to-video"}


def hf_names(served: list[str]) -> list[str]:
    """The Hugging Face tasks a model with these corral tasks answers."""
    return [name for name, spec in HF_TASKS.items() if spec.task.value in served]


def choose(served: list[str], payload: dict[str, Any], requested: str | None = None) -> str:
    """The Hugging Face task of one request to a model serving ``served`` (corral task names)."""
    names = hf_names(served)
    if not names:
        raise UnsupportedTaskError(f"this model serves {', '.join(served) or 'no task'}, none of them through "
                                   "the Hugging Face task API yet")
    if requested is not None:
        if requested not in names:
            raise UnsupportedTaskError(f"this model does not serve {requested}", f"it serves: {', '.join(names)}")
        return requested
    params = payload.get("parameters") or {}
    inputs = payload.get("inputs")
    if isinstance(params, dict) and "candidate_labels" in params:
        if "zero-shot-classification" in names and not _image_like(inputs):
            return "zero-shot-classification"
        if "zero-shot-image-classification" in names:
            return "zero-shot-image-classification"
    if isinstance(inputs, dict) and "source_sentence" in inputs and "sentence-similarity" in names:
        return "sentence-similarity"
    known = {t.value for t in Task}
    for task in served:  # the model's own first task that has a Hugging Face shape
        default = DEFAULT_FOR.get(Task(task)) if task in known else None
        if default is not None:
            return default
    return names[0]


def _image_like(inputs: Any) -> bool:
    """Whether ``inputs`` (one item, or the first of a list) is an image (raw bytes, a data URL) rather
    than text, for a model that classifies both zero-shot."""
    first = inputs[0] if isinstance(inputs, list) and inputs else inputs
    return isinstance(first, bytes | bytearray) or (isinstance(first, str) and first.startswith("data:image/"))


def split_payload(payload: Any) -> tuple[Any, dict[str, Any]]:
    """(inputs, parameters) of a JSON body; a body without ``inputs`` is refused."""
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise UsageError('the body must be a JSON object with "inputs" (and optional "parameters")')
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise UsageError('"parameters" must be an object')
    return payload["inputs"], params
