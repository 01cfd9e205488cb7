"""Where each task is reached, as `corral inspect` reports it: the HTTP routes (and the Hugging
Face task name) and the sidecar method. Pure data, kept beside the shapes it names."""

from __future__ import annotations

from corral.tasks import Task

HF = "POST /models/{name}"

ROUTES: dict[Task, tuple[str, ...]] = {
    Task.CHAT: ("POST /v1/chat/completions", "sidecar chat"),
    Task.COMPLETE: ("POST /v1/completions", "sidecar complete"),
    Task.EMBED: ("POST /v1/embeddings", f"{HF} (feature-extraction, sentence-similarity)", "sidecar embed"),
    Task.RERANK: ("POST /v1/rerank", "sidecar rerank"),
    Task.CLASSIFY_TEXT: (f"{HF} (text-classification, zero-shot-classification)", "sidecar classify_text"),
    Task.CLASSIFY_TOKENS: (f"{HF} (token-classification)", "sidecar classify_tokens"),
    Task.ANSWER_QUESTION: (f"{HF} (question-answering)", "sidecar answer_question"),
    Task.TRANSLATE: (f"{HF} (translation)", "sidecar translate"),
    Task.SUMMARIZE: (f"{HF} (summarization)", "sidecar summarize"),
    Task.CLASSIFY_IMAGE: (f"{HF} (image-classification)", "sidecar classify_image"),
    Task.DETECT_OBJECTS: (f"{HF} (object-detection)", "sidecar detect_objects"),
    Task.SEGMENT_IMAGE: (f"{HF} (image-segmentation)", "sidecar segment_image"),
    Task.DESCRIBE_IMAGE: (f"{HF} (image-to-text)", "sidecar describe_image"),
    Task.TRANSCRIBE: ("POST /v1/audio/transcriptions", "POST /v1/audio/translations (Whisper)",
                      f"{HF} (automatic-speech-recognition)", "sidecar transcribe"),
    Task.SPEAK: ("POST /v1/audio/speech", f"{HF} (text-to-speech)", "sidecar speak"),
    Task.GENERATE_IMAGE: ("POST /v1/images/generations", f"{HF} (text-to-image)", "sidecar generate_image"),
    Task.GENERATE_VIDEO: ("POST /v1/videos (a job: GET /v1/videos/{id}, GET /v1/videos/{id}/content)",
                          f"{HF} (text-to-video)", "sidecar generate_video"),
}


def routes_for(tasks: list[str], served: frozenset[Task]) -> dict[str, list[str]]:
    """Each of a model's tasks with where it is served; a task corral cannot run yet gets none."""
    known = {t.value for t in Task}
    return {t: list(ROUTES.get(Task(t), ())) if Task(t) in served else [] for t in tasks if t in known}
