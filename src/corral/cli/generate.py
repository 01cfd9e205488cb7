"""run, chat and embed (run's text-to-speech in speak.py)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from corral.cli.context import Context, add_load_flags, cli_runtime
from corral.cli.imagine import add_flags as add_generation_flags
from corral.cli.output import print_json
from corral.cli.transcribe import register_flags as register_transcribe_flags
from corral.errors import UsageError
from corral.models.store import Entry
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.loader import entry_task
from corral.tasks import (
    DEFAULT_SAMPLING,
    SEGMENT_SUBTASKS,
    TOKEN_AGGREGATIONS,
    ChatRequest,
    CompletionRequest,
    DescribeImageRequest,
    EmbedImage,
    EmbedRequest,
    EmbedResult,
    ImagePart,
    Message,
    Sampling,
    SummarizeRequest,
    Task,
    TextChunk,
    TranslateRequest,
)
from corral.wire import Collected, dumps, embedding_list, usage_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="generate an answer to one prompt, streamed to stdout")
    p.add_argument("model")
    p.add_argument("prompt", nargs="?", help="the prompt (read from stdin when left out)")
    add_sampling(p)
    p.add_argument("--system", help="a system message (chat models)")
    p.add_argument("--raw", action="store_true", help="plain completion: no chat template")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="image-text chat models: an image the prompt asks about (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON result with usage figures")
    p.add_argument("--doc", action="append", default=[], metavar="TEXT",
                   help="rerank models: a document to rank against the prompt (repeatable; else one per stdin line)")
    p.add_argument("--top-n", type=int, help="rerank models: show only the best N")
    p.add_argument("--labels", help="zero-shot labels, comma-separated: text (an NLI model) or images (CLIP, "
                   "SigLIP)")
    p.add_argument("--multi-label", action="store_true", help="zero-shot: score each label on its own")
    p.add_argument("--top-k", type=int, help="classifiers: show only the best K labels; QA: the K best answers")
    p.add_argument("--context", help="question-answering models: the text the answer is taken from (else stdin)")
    p.add_argument("--task", choices=[t.value for t in Task], help="one task of a model that serves several "
                   "(default: its first)")
    p.add_argument("--threshold", type=float, help="object detection: the lowest score shown (0.5); "
                   "instance / panoptic segmentation: the lowest segment score kept (0.9)")
    _add_output_flags(p)
    p.add_argument("--subtask", choices=SEGMENT_SUBTASKS, help="image segmentation: semantic, instance or "
                   "panoptic (default: the model's own; universal models: panoptic)")
    p.add_argument("--mask-threshold", type=float, default=0.5,
                   help="instance / panoptic segmentation: where a mask probability counts as inside (0.5)")
    p.add_argument("--overlap-mask-area-threshold", type=float, default=0.5, help="instance / panoptic "
                   "segmentation: the share of its own mask a segment must keep visible (0.5)")
    p.add_argument("--source-lang", help="translation: the source language as the model names it")
    p.add_argument("--target-lang", help="translation: the target language as the model names it")
    p.add_argument("--aggregation", choices=TOKEN_AGGREGATIONS, default="simple",
                   help="token classification (NER) models: simple = one row per entity, none = per token")
    register_transcribe_flags(p)
    add_generation_flags(p)
    add_load_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("chat", help="an interactive multi-turn chat in the terminal")
    p.add_argument("model", nargs="?", help="the model (left out with --resume: the saved chat's)")
    add_sampling(p)
    p.add_argument("--system", help="a system message")
    p.add_argument("--save", metavar="NAME", help="keep this chat in the data folder as NAME (see --resume)")
    p.add_argument("--resume", metavar="NAME", help="continue the chat saved as NAME (its last turns shown first)")
    add_load_flags(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("embed", help="print embedding vectors for texts (and images: image-text models)")
    p.add_argument("model")
    p.add_argument("texts", nargs="*")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="image-text models (CLIP, SigLIP): an image to embed (repeatable; - reads stdin); "
                   "the vectors of the images come first, in the order given, then those of the texts")
    p.add_argument("--json", action="store_true", help="OpenAI-style JSON with usage")
    p.add_argument("--no-normalize", action="store_true", help="raw vectors, not unit length")
    add_load_flags(p)
    p.set_defaults(func=cmd_embed)


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="PATH", help="image segmentation: the folder to write each mask to "
                   "as a PNG; text-to-speech: the audio file, its format from the extension (wav, flac, mp3, "
                   "opus/ogg, aac, pcm); image generation: the image file (.png, .jpg, .webp); video generation: "
                   "the .mp4, or a folder for the frames")
    p.add_argument("--voice", help="text-to-speech: one of the model's voices (default: its own; OpenAI's voice "
                   "names mean that one)")
    p.add_argument("--speed", type=float, default=1.0, help="text-to-speech: 0.25 to 4.0 (default 1.0)")


def add_sampling(p: argparse.ArgumentParser) -> None:
    d = DEFAULT_SAMPLING
    p.add_argument("--temperature", type=float,
                   help=f"0 means greedy (default {d.temperature}; 0 for translation and summarisation)")
    p.add_argument("--top-p", type=float, help=f"nucleus sampling (default {d.top_p})")
    p.add_argument("--max-tokens", type=int, help=f"(default {d.max_tokens})")
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")


def sampling_from(args: argparse.Namespace, *, greedy: bool = False) -> Sampling:
    """The sampling flags; a temperature left out is the default, or 0 where ``greedy``."""
    d = DEFAULT_SAMPLING
    temperature = args.temperature if args.temperature is not None else 0.0 if greedy else d.temperature
    given = {f for f in ("temperature", "top_p", "max_tokens", "seed") if getattr(args, f) is not None}
    given |= {"stop"} if args.stop else set()
    return Sampling(max_tokens=d.max_tokens if args.max_tokens is None else args.max_tokens, temperature=temperature,
                    top_p=d.top_p if args.top_p is None else args.top_p, seed=args.seed, stop=tuple(args.stop),
                    given=frozenset(given)).check(lambda field: "--" + field.replace("_", "-"))


def stream_text(chunks: Iterator[TextChunk], echo: bool) -> Collected:
    got = Collected()
    for chunk in chunks:
        got.add(chunk)
        if echo and chunk.text:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
    return got


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    asked, entry = ctx.resolve_asked(args.model)
    from corral.cli.tasks import ONE_SHOT

    own = Task(args.task) if args.task else Task.CHAT if args.image else _labelled(args, entry) or \
        next((Task(t) for t in entry.info.tasks[:1]), None)
    if own in ONE_SHOT:
        entry_task(entry, own)
        return ONE_SHOT[own](args, ctx, entry)
    if own is Task.SPEAK:
        from corral.cli.speak import run_speak

        entry_task(entry, own)
        return run_speak(args, ctx, entry)
    if own is Task.DESCRIBE_IMAGE:
        from corral.cli.tasks import image_of

        task, prompt = entry_task(entry, own), None
        request: Any = DescribeImageRequest(image_of(args, ctx), sampling=sampling_from(args, greedy=True))
    else:
        prompt = args.prompt if args.prompt is not None else sys.stdin.read()
        task, request = _text_request(args, ctx, entry, own, prompt)
    with cli_runtime(args, ctx) as runtime:
        started = time.perf_counter()
        with closing(runtime.stream(task, asked, request, CallInfo(Door.CLI, "run", prompt=prompt))) as chunks:
            got = stream_text(chunks, echo=not args.json)
        elapsed = time.perf_counter() - started
    if args.json:
        print_json({"model": entry.name, "task": task.value, "text": got.text, "finish_reason": got.finish_reason,
                    "usage": usage_json(got.usage), "seconds": round(elapsed, 4)})
    else:
        sys.stdout.write("\n")
    return 0


def _labelled(args: argparse.Namespace, entry: Entry) -> Task | None:
    """With --labels, the zero-shot task of a model that classifies images and not text (CLIP, SigLIP)."""
    tasks = entry.info.tasks
    if args.labels and Task.CLASSIFY_IMAGE.value in tasks and Task.CLASSIFY_TEXT.value not in tasks:
        return Task.CLASSIFY_IMAGE
    return None


def _user_message(args: argparse.Namespace, ctx: Context, prompt: str) -> Message:
    """The prompt, after the ``--image`` files (decoded and checked) where given."""
    if not args.image:
        return Message("user", prompt)
    from corral.cli.tasks import read_image

    images = [ImagePart(read_image(name, ctx)) for name in args.image]
    return Message("user", prompt, parts=(*images, prompt))


def _text_request(args: argparse.Namespace, ctx: Context, entry: Entry, own: Task | None,
                  prompt: str) -> tuple[Task, Any]:
    """The streamed task ``run`` asks of the model, and its request."""
    if own in (Task.TRANSLATE, Task.SUMMARIZE):
        task = entry_task(entry, own)
        sampling = sampling_from(args, greedy=True)
        if task is Task.TRANSLATE:
            return task, TranslateRequest(prompt, args.source_lang, args.target_lang, sampling=sampling)
        return task, SummarizeRequest(prompt, sampling=sampling)
    sampling = sampling_from(args)
    wanted = (Task.COMPLETE,) if args.raw else (own,) if own in (Task.CHAT, Task.COMPLETE) and args.task else \
        (Task.CHAT, Task.COMPLETE)
    task = entry_task(entry, *wanted)
    if task is Task.CHAT:
        messages = ([Message("system", args.system)] if args.system else []) + [_user_message(args, ctx, prompt)]
        return task, ChatRequest(tuple(messages), sampling=sampling)
    if args.image:
        raise UsageError("--image needs a chat model that reads images")
    return task, CompletionRequest(prompt, sampling=sampling)


def cmd_chat(args: argparse.Namespace, ctx: Context) -> int:
    """Interactive chat; every turn one call through the runtime (logged with door cli)."""
    if args.save or args.resume:  # a chat kept in the data folder: cli/conversations.py
        from corral.cli.conversations import chat_kept

        return chat_kept(args, ctx)
    if args.model is None:
        raise UsageError("chat needs a MODEL, or --resume NAME to continue a saved chat")
    sampling = sampling_from(args)
    asked, entry = ctx.resolve_asked(args.model)
    entry_task(entry, Task.CHAT)
    history: list[Message] = [Message("system", args.system)] if args.system else []
    with cli_runtime(args, ctx) as runtime:
        if runtime.runtime.router.chain(entry.name) is None:  # a local model: loaded before the first prompt
            runtime.wait(runtime.runtime.load(entry.name))
        print(f"chatting with {entry.name}; /exit or Ctrl-D to leave, Ctrl-C stops an answer, /reset clears")
        while (line := _prompt()) is not None:
            text = line.strip()
            if text in ("/exit", "/quit", "/bye"):
                break
            if text == "/reset":
                history = history[:1] if args.system else []
                print("(history cleared)")
            elif text:
                turn = [*history, Message("user", line)]
                call = CallInfo(Door.CLI, "chat", prompt=line)
                try:
                    with closing(runtime.stream(Task.CHAT, asked,
                                                ChatRequest(tuple(turn), sampling=sampling), call)) as chunks:
                        answer = stream_text(chunks, echo=True).text
                except KeyboardInterrupt:
                    print("\n(stopped)")
                    continue
                print()
                history = [*turn, Message("assistant", answer)]
    return 0


def _prompt() -> str | None:
    """The next line typed; None at end of input. Ctrl-C at the prompt is a hint, not an exit."""
    while True:
        try:
            return input(">>> ")
        except EOFError:
            print()
            return None
        except KeyboardInterrupt:
            print("\n(use /exit or Ctrl-D to leave)")


def cmd_embed(args: argparse.Namespace, ctx: Context) -> int:
    entry = ctx.resolve(args.model)
    entry_task(entry, Task.EMBED)
    if not args.texts and not args.image:
        raise UsageError("nothing to embed: give texts, or --image FILE for an image-text model",
                         'corral embed MODEL "some text" [--image photo.jpg]')
    from corral.cli.tasks import read_image

    inputs = (*(EmbedImage(read_image(name, ctx)) for name in args.image), *args.texts)  # images first
    with cli_runtime(args, ctx) as runtime:
        result: EmbedResult = runtime.call(Task.EMBED, entry.name,
                                           EmbedRequest(inputs, normalize=not args.no_normalize),
                                           CallInfo(Door.CLI, "embed"))
    if args.json:
        sys.stdout.write(dumps(embedding_list(result, entry.name), indent=True).decode() + "\n")
    else:
        for vector in result.vectors:
            sys.stdout.write("[" + ", ".join(f"{x:.6f}" for x in vector) + "]\n")
    return 0
