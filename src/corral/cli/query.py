"""`corral query`: the chat one-liner. One prompt to any local or remote model or alias, streamed to
the terminal; text piped in comes first (``cat notes.txt | corral query fast "summarise"``)."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import closing

from corral.cli.context import Context, add_load_flags, cli_runtime
from corral.cli.generate import add_sampling, sampling_from, stream_text
from corral.cli.output import print_json
from corral.errors import UsageError
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.loader import entry_task
from corral.tasks import ChatRequest, CompletionRequest, Message, Task
from corral.wire import usage_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("query", help="ask one chat prompt of any local or remote model or alias, streamed")
    p.add_argument("model")
    p.add_argument("prompt", nargs="?", help="the prompt; text piped on stdin comes before it (or is the prompt)")
    p.add_argument("--system", help="a system message")
    add_sampling(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON result: text, usage, cost and the target that served")
    add_load_flags(p)
    p.set_defaults(func=cmd_query)


def prompt_of(argument: str | None, piped: str | None) -> str:
    """Piped text, then the argument after a blank line; either alone; neither is an error."""
    parts = [p.strip("\n") for p in (piped, argument) if p is not None and p.strip()]
    if not parts:
        raise UsageError("no prompt: give one after the model, or pipe text in",
                         'corral query MODEL "prompt"   or   cat notes.txt | corral query MODEL "summarise"')
    return "\n\n".join(parts)


def cmd_query(args: argparse.Namespace, ctx: Context) -> int:
    piped = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    prompt = prompt_of(args.prompt, piped)
    entry = ctx.resolve(args.model)
    task = entry_task(entry, Task.CHAT, Task.COMPLETE)
    sampling = sampling_from(args)
    if task is Task.CHAT:
        messages = ([Message("system", args.system)] if args.system else []) + [Message("user", prompt)]
        request: ChatRequest | CompletionRequest = ChatRequest(tuple(messages), sampling=sampling)
    elif args.system:
        raise UsageError(f"{entry.name} completes text and has no chat template: --system needs a chat model")
    else:
        request = CompletionRequest(prompt, sampling=sampling)
    call = CallInfo(Door.CLI, "query", prompt=prompt)
    with cli_runtime(args, ctx) as runtime:
        started = time.perf_counter()
        with closing(runtime.stream(task, entry.name, request, call)) as chunks:
            got = stream_text(chunks, echo=not args.json)
        elapsed = time.perf_counter() - started
    trace = call.trace
    if args.json:
        print_json({"model": entry.name, "target": trace.target or entry.name, "task": task.value, "text": got.text,
                    "finish_reason": got.finish_reason, "usage": usage_json(got.usage),
                    "cost_usd": trace.cost_usd, "price_source": trace.price_source,
                    "attempts": trace.attempts, "seconds": round(elapsed, 4)})
    else:
        sys.stdout.write("\n")
    return 0
