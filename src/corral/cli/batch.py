"""`corral batch IN.jsonl -o OUT.jsonl --model MODEL`: one request per input line through the runtime,
N at a time (the runtime batches them where the engine batches), each result appended to OUT as one
whole line the moment it finishes. A line that cannot run, or fails, is an error line; the batch goes
on. A re-run keeps OUT's answered lines, redoes the rest (a failure, a line a kill cut short) and skips
nothing else, so Ctrl-C or a kill never costs more than the calls in flight. ``--dry-run`` checks
every line and runs nothing. The file formats: :mod:`corral.batchfile`."""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
import time
from pathlib import Path
from typing import IO, Any

from corral.batchfile import Item, done_ids, error_json, read_items
from corral.cli.context import Context, add_load_flags, cli_runtime
from corral.errors import CorralError, UsageError
from corral.files import write_atomically
from corral.models.store import Entry
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.loader import entry_task
from corral.runtime.runtime import Runtime
from corral.tasks import EmbedResult, Task
from corral.wire import Collected, dumps, usage_json

MAX_CONCURRENCY = 64  # the runtime's queue per model


class OutputError(CorralError):
    """OUT could not be written (a full disk): what was written stays, a re-run completes it."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("batch", help="run one request per line of a JSONL file; results written as they finish")
    p.add_argument("input", metavar="IN.jsonl", help="one JSON object per line: messages, prompt or input, "
                   "an optional id, and options (temperature, top_p, max_tokens, seed, stop; system with prompt)")
    p.add_argument("-o", "--output", metavar="OUT.jsonl", help="where results go, one line per input line "
                   "(appended; a re-run skips the ids answered there)")
    p.add_argument("-m", "--model", required=True, help="a local or remote model or alias")
    p.add_argument("-c", "--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    p.add_argument("--parallel", type=int, default=1, help="local llama.cpp models: sequences decoded together")
    p.add_argument("--dry-run", action="store_true", help="check every line and report errors; run nothing")
    add_load_flags(p)
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace, ctx: Context) -> int:
    source = Path(args.input)
    if not source.is_file():
        raise UsageError(f"no input file {args.input}", "give a JSONL file: one JSON object per line")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be 1 to {MAX_CONCURRENCY}, not {args.concurrency}")
    if args.output is None and not args.dry_run:
        raise UsageError("give -o OUT.jsonl for the results", "or --dry-run to check the lines only")
    entry = ctx.resolve(args.model)
    items = [checked(item, entry) for item in read_items(source, chats=serves(entry, Task.CHAT))]
    if args.dry_run:
        return report_dry_run(items)
    out = Path(args.output)
    if out.exists() and out.resolve() == source.resolve():
        raise UsageError("OUT is the input file", "write the results to another file")
    answered = resume(out)
    todo = [item for item in items if item.error is not None or item.id not in answered]  # errors: written again
    sys.stderr.write(f"{len(items)} lines: {len(items) - len(todo)} already answered in {out}, {len(todo)} to run\n")
    with cli_runtime(args, ctx, parallel=args.parallel) as runtime:
        counts = Counts(len(todo))
        try:
            with out.open("ab") as sink:
                runtime.wait(run_all(runtime.runtime, entry.name, todo, args.concurrency, Writer(sink, counts)))
        except KeyboardInterrupt:
            sys.stderr.write(f"\ninterrupted: {counts.summary(out)}; run the same command again to finish\n")
            return 130
        except OSError as exc:
            fix = "free space" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "check the path"
            raise OutputError(f"could not write {out}: {exc.strerror or exc}",
                              f"{counts.summary(out)} and are kept; {fix} and run the same command again") from None
    sys.stderr.write(counts.summary(out) + "\n")
    return 1 if counts.failed else 0


def serves(entry: Entry, task: Task) -> bool:
    try:
        entry_task(entry, task)
    except CorralError:
        return False
    return True


def checked(item: Item, entry: Entry) -> Item:
    """The item, or an error item where the model does not serve its task."""
    if item.error is None and item.task is not None and not serves(entry, item.task):
        what = {Task.EMBED: "embed", Task.CHAT: "chat", Task.COMPLETE: "complete text"}.get(item.task, item.task.value)
        return Item(item.id, item.line, error=f"{entry.name} does not {what}: give lines the model can run")
    return item


def report_dry_run(items: list[Item]) -> int:
    bad = [item for item in items if item.error is not None]
    for item in bad:
        sys.stdout.write(f"line {item.line}: {item.error}\n")
    sys.stdout.write(f"{len(items)} lines: {len(items) - len(bad)} valid, {len(bad)} with errors\n")
    return 1 if bad else 0


def resume(out: Path) -> set[str | int]:
    """The ids OUT already answers; OUT rewritten (atomically) to hold only those lines when it holds
    others too (errors to redo, a last line cut short)."""
    answered, rewrite = done_ids(out)
    if rewrite:
        write_atomically(out, answered.values(), suffix=".tmp")
    return set(answered)


class Counts:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.failed, self.started = total, 0, 0, time.monotonic()

    def summary(self, out: Path) -> str:
        return f"{self.done} of {self.total} results written to {out} ({self.failed} failed)"


class Writer:
    """Appends each result to OUT as one whole line, at once, and moves the progress bar."""

    def __init__(self, sink: IO[bytes], counts: Counts) -> None:
        self.sink, self.counts = sink, counts
        self.bar: Any = None

    def write(self, row: dict[str, Any]) -> None:
        self.sink.write(dumps(row) + b"\n")
        self.sink.flush()
        self.counts.done += 1
        self.counts.failed += row["error"] is not None
        if self.bar is not None:
            progress, task = self.bar
            elapsed = max(time.monotonic() - self.counts.started, 1e-9)
            progress.update(task, advance=1, failed=self.counts.failed, rate=f"{self.counts.done / elapsed:.2f}/s")


async def run_all(runtime: Runtime, model: str, items: list[Item], concurrency: int, writer: Writer) -> None:
    """Every item through ``concurrency`` workers, each result written as it finishes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    queue = list(reversed(items))
    console = Console(stderr=True)
    progress = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("failed {task.fields[failed]}"), TextColumn("{task.fields[rate]}"),
                        TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not console.is_terminal)

    async def worker() -> None:
        while queue:
            item = queue.pop()
            writer.write(await answer(runtime, model, item))

    with progress:
        writer.bar = (progress, progress.add_task("batch", total=len(items), failed=0, rate="-"))
        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(items)))]
        try:
            await asyncio.gather(*workers)
        finally:  # a write that failed, or Ctrl-C: no call goes on once the batch stops
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


async def answer(runtime: Runtime, model: str, item: Item) -> dict[str, Any]:
    """The output line of one item: its answer, or what went wrong."""
    row: dict[str, Any] = {"id": item.id, "line": item.line, "model": model, "target": None}
    if item.error is not None:
        return {**row, "error": error_json(item.error, "fix the line and run the same command again", 400)}
    call = CallInfo(Door.CLI, "batch")
    started = time.perf_counter()
    try:
        if item.task is Task.EMBED:
            result: EmbedResult = await runtime.call(Task.EMBED, model, item.request, call)
            row.update(embeddings=[list(map(float, v)) for v in result.vectors], usage=usage_json(result.usage))
        else:
            assert item.task is not None
            got = Collected()
            async for chunk in runtime.run(item.task, model, item.request, call):
                got.add(chunk)
            row.update(text=got.text, finish_reason=got.finish_reason, usage=usage_json(got.usage))
    except CorralError as exc:
        return {**row, "target": call.trace.target, "error": error_json(exc.message, exc.hint, exc.http_status)}
    except Exception as exc:  # one line's failure is that line's, never the batch's
        return {**row, "error": error_json(f"internal error: {type(exc).__name__}: {exc}", None, 500)}
    return {**row, "target": call.trace.target, "cost_usd": call.trace.cost_usd,
            "seconds": round(time.perf_counter() - started, 4), "error": None}
