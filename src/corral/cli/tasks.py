"""`corral run` for the one-shot tasks (rerank, classify_text, classify_tokens, answer_question,
the image tasks; transcribe's is cli/transcribe.py): the request from the arguments, one call
through the runtime (logged with door cli), a readable summary or ``--json`` in the shape the
task's API answers over HTTP."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from corral.cli.context import Context, cli_runtime
from corral.cli.imagine import run_generate_image, run_generate_video
from corral.cli.media import read_bytes, run_classify_audio, run_classify_video
from corral.cli.output import print_json, table
from corral.cli.transcribe import run_transcribe
from corral.errors import UsageError
from corral.models.store import Entry
from corral.protocols.hf.tokens import check_inputs as check_texts
from corral.protocols.hf.tokens import token_classification_json
from corral.protocols.rerank import RerankBody, check_inputs, ranked, rerank_response
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import (
    AnswerQuestionRequest,
    AnswerQuestionResult,
    ClassifyImageRequest,
    ClassifyImageResult,
    ClassifyTextRequest,
    ClassifyTextResult,
    ClassifyTokensRequest,
    ClassifyTokensResult,
    DetectObjectsRequest,
    DetectObjectsResult,
    RerankRequest,
    RerankResult,
    SegmentImageRequest,
    SegmentImageResult,
    Task,
)


def run_rerank(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run RERANKER QUERY --doc A --doc B` (documents one per stdin line without --doc)."""
    if args.prompt is None:
        raise UsageError("a rerank model needs the query as the prompt", 'corral run MODEL "query" --doc "a document"')
    documents = args.doc or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    check_inputs(args.prompt, documents)
    if args.top_n is not None and args.top_n < 1:
        raise UsageError("--top-n must be at least 1")
    with cli_runtime(args, ctx) as runtime:
        result: RerankResult = runtime.call(Task.RERANK, entry.name, RerankRequest.of(args.prompt, documents),
                                            CallInfo(Door.CLI, "run", prompt=args.prompt))
    if args.json:
        body = RerankBody(model=entry.name, query=args.prompt, documents=list(documents), top_n=args.top_n)
        print_json(rerank_response(result, body))
        return 0
    rows = [[str(rank), f"{r['relevance_score']:.4f}", str(r["index"]), _short(r["document"]["text"])]
            for rank, r in enumerate(ranked(result, documents, args.top_n), start=1)]
    print(table(["rank", "score", "index", "document"], rows))
    return 0


def _short(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def run_classify_tokens(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run NER_MODEL "text"` (the text from stdin when left out): the entities as a table,
    or ``--json`` in Hugging Face's token-classification shape."""
    text = args.prompt if args.prompt is not None else sys.stdin.read()
    if not text.strip():
        raise UsageError("the text to classify is empty", 'corral run MODEL "a sentence to tag"')
    check_texts([text])
    request = ClassifyTokensRequest((text,), args.aggregation)
    with cli_runtime(args, ctx) as runtime:
        result: ClassifyTokensResult = runtime.call(Task.CLASSIFY_TOKENS, entry.name, request,
                                                    CallInfo(Door.CLI, "run", prompt=text))
    entities = result.entities[0]
    if args.json:
        print_json(token_classification_json(entities, args.aggregation))
        return 0
    rows = [[_short(e.text, 40), e.label, str(e.start), str(e.end), f"{e.score:.4f}"] for e in entities]
    print(table(["text", "label", "start", "end", "score"], rows))
    return 0


def run_classify_text(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run CLASSIFIER TEXT [--labels a,b --multi-label] [--top-k K]` (text from stdin when left out)."""
    text = args.prompt if args.prompt is not None else sys.stdin.read()
    if not text.strip():
        raise UsageError("there is no text to classify", 'corral run MODEL "some text"')
    labels = tuple(x.strip() for x in (args.labels or "").split(",") if x.strip())
    if args.top_k is not None and args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    request = ClassifyTextRequest((text,), labels, args.multi_label)
    with cli_runtime(args, ctx) as runtime:
        result: ClassifyTextResult = runtime.call(Task.CLASSIFY_TEXT, entry.name, request,
                                                  CallInfo(Door.CLI, "run", prompt=text))
    scored = result.labels[0][: args.top_k]
    if args.json:
        print_json([{"label": label, "score": score} for label, score in scored])
        return 0
    print(table(["label", "score"], [[label, f"{score:.4f}"] for label, score in scored]))
    return 0


def run_answer_question(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run QA_MODEL QUESTION --context TEXT` (the context from stdin when left out)."""
    if args.prompt is None:
        raise UsageError("a question-answering model needs the question as the prompt",
                         'corral run MODEL "who wrote it?" --context "the text to answer from"')
    context = args.context if args.context is not None else sys.stdin.read()
    if not context.strip():
        raise UsageError("there is no context to answer from", "give --context TEXT or pipe the text in")
    top_k = args.top_k or 1
    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    with cli_runtime(args, ctx) as runtime:
        result: AnswerQuestionResult = runtime.call(Task.ANSWER_QUESTION, entry.name,
                                                    AnswerQuestionRequest(((args.prompt, context),), top_k),
                                                    CallInfo(Door.CLI, "run", prompt=args.prompt))
    answers = result.answers[0]
    if args.json:
        print_json([{"answer": a.text, "score": a.score, "start": a.start, "end": a.end} for a in answers])
        return 0
    print(table(["answer", "score", "start", "end"],
                [[_short(a.text), f"{a.score:.4f}", str(a.start), str(a.end)] for a in answers]))
    return 0


def image_of(args: argparse.Namespace, ctx: Context) -> Any:
    """The image named by the prompt (a file path, or - for stdin), decoded and checked."""
    if args.prompt is None:
        raise UsageError("an image model needs an image: a file path, or - to read it from stdin",
                         "corral run MODEL photo.jpg")
    return read_image(args.prompt, ctx)


def read_image(name: str, ctx: Context) -> Any:
    """The image in the file ``name`` (``-``: stdin), decoded and checked."""
    from corral.media import decode_image

    data = read_bytes(name, "image", "corral run MODEL photo.jpg")
    return decode_image(data, max_pixels=ctx.settings.runtime.max_image_pixels)


def run_classify_image(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run IMAGE_CLASSIFIER photo.jpg [--labels a,b] [--top-k K]` (labels: zero-shot, CLIP / SigLIP)."""
    image = image_of(args, ctx)
    labels = tuple(x.strip() for x in (args.labels or "").split(",") if x.strip())
    with cli_runtime(args, ctx) as runtime:
        result: ClassifyImageResult = runtime.call(Task.CLASSIFY_IMAGE, entry.name,
                                                   ClassifyImageRequest((image,), labels), CallInfo(Door.CLI, "run"))
    scored = result.labels[0][: args.top_k or 5]
    if args.json:
        print_json([{"label": label, "score": score} for label, score in scored])
    else:
        print(table(["label", "score"], [[label, f"{score:.4f}"] for label, score in scored]))
    return 0


def run_detect_objects(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run DETECTOR photo.jpg [--threshold 0.5]`: boxes in pixels of the image."""
    image = image_of(args, ctx)
    threshold = 0.5 if args.threshold is None else args.threshold
    if not 0 <= threshold <= 1:
        raise UsageError("--threshold must be from 0 to 1")
    with cli_runtime(args, ctx) as runtime:
        result: DetectObjectsResult = runtime.call(Task.DETECT_OBJECTS, entry.name,
                                                   DetectObjectsRequest((image,), threshold),
                                                   CallInfo(Door.CLI, "run"))
    found = result.detections[0]
    if args.json:
        print_json([{"label": d.label, "score": d.score, "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), d.box,
                                                                            strict=True))} for d in found])
    else:
        print(table(["label", "score", "xmin", "ymin", "xmax", "ymax"],
                    [[d.label, f"{d.score:.4f}", *(str(v) for v in d.box)] for d in found]))
    return 0


def run_segment_image(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run SEGMENTER photo.jpg [--subtask instance] [--threshold 0.9] [-o DIR]`: the segments
    with their scores; ``-o DIR`` writes each mask as a PNG of the image's size."""
    from pathlib import Path

    image = image_of(args, ctx)
    threshold = 0.9 if args.threshold is None else args.threshold
    for flag, value in (("--threshold", threshold), ("--mask-threshold", args.mask_threshold),
                        ("--overlap-mask-area-threshold", args.overlap_mask_area_threshold)):
        if not 0 <= value <= 1:
            raise UsageError(f"{flag} must be from 0 to 1")
    request = SegmentImageRequest((image,), args.subtask, threshold, args.mask_threshold,
                                  args.overlap_mask_area_threshold)
    with cli_runtime(args, ctx) as runtime:
        result: SegmentImageResult = runtime.call(Task.SEGMENT_IMAGE, entry.name, request, CallInfo(Door.CLI, "run"))
    segments = result.segments[0]
    written: list[str | None] = [None] * len(segments)
    if args.output:
        folder = Path(args.output)
        folder.mkdir(parents=True, exist_ok=True)
        for i, seg in enumerate(segments):
            path = folder / f"{i:02d}-{''.join(c if c.isalnum() else '_' for c in seg.label)}.png"
            path.write_bytes(seg.mask)
            written[i] = str(path)
    if args.json:
        print_json([{"label": s.label, "score": s.score, "mask": w} for s, w in zip(segments, written, strict=True)])
    else:
        print(table(["label", "score", "mask"], [[s.label, f"{s.score:.4f}", w or "-"]
                                                 for s, w in zip(segments, written, strict=True)]))
    return 0


ONE_SHOT: dict[Task, Callable[[argparse.Namespace, Context, Entry], int]] = {
    Task.RERANK: run_rerank, Task.CLASSIFY_TEXT: run_classify_text, Task.ANSWER_QUESTION: run_answer_question,
    Task.CLASSIFY_IMAGE: run_classify_image, Task.DETECT_OBJECTS: run_detect_objects,
    Task.SEGMENT_IMAGE: run_segment_image, Task.CLASSIFY_TOKENS: run_classify_tokens,
    Task.CLASSIFY_AUDIO: run_classify_audio, Task.CLASSIFY_VIDEO: run_classify_video,
    Task.TRANSCRIBE: run_transcribe,
    Task.GENERATE_IMAGE: run_generate_image, Task.GENERATE_VIDEO: run_generate_video,
}
