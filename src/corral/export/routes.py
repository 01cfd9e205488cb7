"""The routes an exported server has, per task, as data: serve.py's templates implement exactly
these (a test posts to each), and the export's README lists them."""

from __future__ import annotations

from corral.export.plan import ExportPlan
from corral.tasks import Task

HF = "/models/{name}"

# task -> (route, what it does); "/models/{name}" is the Hugging Face task API's route for the model
ROUTES: dict[Task, tuple[tuple[str, str], ...]] = {
    Task.CHAT: (("/v1/chat/completions", "OpenAI chat completions (`\"stream\": true` for SSE)"),),
    Task.COMPLETE: (("/v1/completions", "OpenAI text completions (`\"stream\": true` for SSE)"),),
    Task.EMBED: (("/v1/embeddings", "OpenAI embeddings (float or base64)"),
                 (HF, "HF feature-extraction (a vector per text) and sentence-similarity")),
    Task.RERANK: (("/v1/rerank", "rerank (Cohere / Jina / vLLM shape): query + documents -> ranked results"),
                  ("/rerank", "the same")),
    Task.CLASSIFY_TEXT: ((HF, "HF text-classification, or zero-shot-classification with `candidate_labels`"),),
    Task.CLASSIFY_TOKENS: ((HF, "HF token-classification (entities with offsets)"),),
    Task.ANSWER_QUESTION: ((HF, "HF question-answering: {question, context} -> answer, score, start, end"),),
    Task.TRANSLATE: ((HF, "HF translation: text -> [{translation_text}]"),),
    Task.SUMMARIZE: ((HF, "HF summarization: text -> [{summary_text}]"),),
    Task.CLASSIFY_IMAGE: ((HF, "HF image-classification: image bytes (or base64 in JSON) -> labels"),),
    Task.DETECT_OBJECTS: ((HF, "HF object-detection: image -> [{label, score, box}]"),),
    Task.SEGMENT_IMAGE: ((HF, "HF image-segmentation: image -> [{label, score, mask (PNG base64)}]"),),
    Task.DESCRIBE_IMAGE: ((HF, "HF image-to-text: image -> [{generated_text}]"),),
    Task.CLASSIFY_AUDIO: ((HF, "HF audio-classification: audio bytes -> labels"),),
    Task.CLASSIFY_VIDEO: ((HF, "HF video-classification: MP4 bytes -> labels"),),
    Task.TRANSCRIBE: (("/v1/audio/transcriptions", "OpenAI transcriptions (multipart `file`; json or text)"),
                      (HF, "HF automatic-speech-recognition: audio bytes -> {text}")),
    Task.SPEAK: (("/v1/audio/speech", "OpenAI speech: {input, voice, response_format wav|pcm|flac} -> audio"),
                 (HF, "HF text-to-speech: text -> FLAC bytes")),
    Task.GENERATE_IMAGE: (("/v1/images/generations", "OpenAI images: {prompt, size, n} -> b64_json PNGs"),
                          (HF, "HF text-to-image: prompt -> PNG bytes")),
    Task.GENERATE_VIDEO: ((HF, "HF text-to-video: prompt -> MP4 bytes"),),
}
NO_HF = frozenset({"llama_cpp"})  # engines whose server has no HF task route


def routes_for(plan: ExportPlan) -> list[tuple[str, str]]:
    """(route, what it does) of the exported server, the model's name filled in, each route once."""
    seen: dict[str, str] = {}
    for task in plan.tasks:
        for route, text in ROUTES.get(Task(task), ()):
            if route == HF and plan.entry.info.engine in NO_HF:
                continue
            if task == Task.EMBED and plan.entry.info.engine in NO_HF:
                text = "OpenAI embeddings (float or base64)"
            seen.setdefault(route.replace("{name}", plan.entry.name), text)
    return list(seen.items())
