"""`corral compare MODEL MODEL... "prompt"`: one prompt on 2-6 local and remote models, the answers
side by side with time to first token, tokens/s, total time, tokens in / out, cost, and for local
models load time and measured memory (:mod:`corral.runtime.compare` measures; the web UI shows
the same call)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from corral.cli.context import Context, add_load_flags, cli_runtime
from corral.cli.generate import add_sampling, sampling_from
from corral.cli.output import human_bytes, print_json
from corral.cli.query import prompt_of
from corral.errors import UsageError
from corral.runtime.compare import MAX_MODELS, MIN_MODELS, Compared, CompareOptions
from corral.runtime.loader import entry_task
from corral.tasks import ChatRequest, Message, Task

ROWS = (("time to first token", "ttft_s"), ("tokens/s", "tokens_per_s"), ("total time", "total_s"),
        ("tokens in / out", "tokens"), ("cost", "cost_usd"), ("load time", "load_s"), ("memory", "memory_bytes"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compare", help=f"run one prompt on {MIN_MODELS}-{MAX_MODELS} models; answers and "
                       "timings side by side")
    p.add_argument("models", nargs="+", metavar="MODEL", help="local or remote models or aliases, then the prompt")
    p.add_argument("--system", help="a system message")
    add_sampling(p)
    p.add_argument("--repeat", type=int, default=1, help="run each model K times; report the medians (default 1)")
    p.add_argument("--concurrent", action="store_true",
                   help="run local models at the same time (default: one after another; remote ones always overlap)")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    add_load_flags(p)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace, ctx: Context) -> int:
    *names, argument = args.models
    if not MIN_MODELS <= len(names) <= MAX_MODELS:
        raise UsageError(f"compare takes {MIN_MODELS} to {MAX_MODELS} models, then the prompt; got {len(names)} "
                         f"model(s)", 'corral compare MODEL MODEL [MODEL...] "prompt"')
    if not 1 <= args.repeat <= 100:
        raise UsageError(f"--repeat must be 1 to 100, not {args.repeat}")
    piped = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    prompt = prompt_of(argument, piped)
    entries = [ctx.resolve(name) for name in names]  # an unknown model: an error before any work
    for entry in entries:
        entry_task(entry, Task.CHAT)
    messages = ([Message("system", args.system)] if args.system else []) + [Message("user", prompt)]
    request = ChatRequest(tuple(messages), sampling=sampling_from(args))
    options = CompareOptions(concurrent=args.concurrent, repeat=args.repeat)
    with cli_runtime(args, ctx, max_loaded=len(entries) if args.concurrent else 1) as runtime:
        rows = runtime.wait(runtime.runtime.compare([e.name for e in entries], request, options))
    if args.json:
        print_json({"prompt": prompt, "repeat": args.repeat, "concurrent": args.concurrent,
                    "results": [row.to_json() for row in rows]})
    else:
        show(rows)
    return 1 if any(row.error is not None for row in rows) else 0


def cell(data: dict[str, Any], key: str) -> str:
    """One metric as the table shows it; '-' where it does not apply."""
    if key == "tokens":
        return "-" if data["tokens_in"] is None else f"{data['tokens_in']} / {data['tokens_out']}"
    value = data[key]
    if value is None:
        return "already loaded" if key == "load_s" and data["local"] and data["error"] is None else "-"
    if key == "memory_bytes":
        return human_bytes(value)
    if key == "cost_usd":
        return f"${value:.6f}"
    if key == "tokens_per_s":
        return f"{value:.1f}"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def show(rows: list[Compared]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=True)
    table.add_column("")
    results = [row.to_json() for row in rows]
    for data in results:
        target = f"\n→ {data['target']}" if data["target"] and data["target"] != data["model"] else ""
        table.add_column(data["model"].replace("/", "/\n", 1) + target, overflow="fold")  # provider/ upstream
    table.add_row("answer", *(_answer(data) for data in results))
    for label, key in ROWS:
        table.add_row(label, *(cell(data, key) for data in results))
    Console(soft_wrap=False).print(table)


def _answer(data: dict[str, Any]) -> str:
    from rich.markup import escape

    if data["error"] is not None:
        hint = f" ({data['error']['hint']})" if data["error"]["hint"] else ""
        return escape(f"error: {data['error']['message']}{hint}")
    return escape(data["text"] or "")
