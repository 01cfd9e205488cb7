"""One prompt on 2-6 models, measured the same way for each: what `corral compare` and the web UI's
compare page show. Local models run one after another by default, so one model's timings are not
disturbed by another's work (``concurrent`` overlaps them); remote ones always overlap (their time is
spent waiting). A local model is loaded before its first run, its load time and measured memory
reported on their own, so time to first token and total time are the prompt's alone. ``repeat``
runs each model K times and reports the median of every figure; the answer shown is the first."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.errors import CorralError
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import ChatRequest, Task, TextChunk, Usage

if TYPE_CHECKING:
    from corral.runtime.runtime import Runtime

MIN_MODELS, MAX_MODELS = 2, 6
OnText = Callable[[int, str], None]  # (the model's index, a piece of its answer)
OnPiece = Callable[[str], None]


@dataclass(frozen=True)
class CompareOptions:
    concurrent: bool = False  # local models overlap too
    repeat: int = 1
    door: Door = Door.CLI


@dataclass
class Run:
    """One answer's figures (seconds)."""

    text: str
    finish_reason: str | None
    ttft: float | None
    total: float
    usage: Usage
    cost_usd: float | None
    price_source: str | None
    target: str | None

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of generation (after the first token, where there are several)."""
        out = self.usage.completion_tokens
        span = self.total - self.ttft if self.ttft is not None and out > 1 else self.total
        tokens = out - 1 if self.ttft is not None and out > 1 else out
        return tokens / span if span > 0 and tokens > 0 else None


@dataclass
class Compared:
    """One model's row: the medians of its runs, its load and memory (local models), or its error."""

    model: str
    local: bool
    runs: list[Run] = field(default_factory=list)
    load_s: float | None = None  # None: remote, or already loaded
    memory_bytes: int | None = None
    error: CorralError | None = None

    def figure(self, name: str) -> float | None:
        values = [v for run in self.runs if (v := _value(run, name)) is not None]
        return statistics.median(values) if values else None

    def to_json(self) -> dict[str, Any]:
        first = self.runs[0] if self.runs else None
        tokens_in, tokens_out = self.figure("tokens_in"), self.figure("tokens_out")
        return {
            "model": self.model, "target": first.target if first else None, "local": self.local,
            "text": first.text if first else None, "finish_reason": first.finish_reason if first else None,
            "ttft_s": _round(self.figure("ttft")), "tokens_per_s": _round(self.figure("tokens_per_s"), 2),
            "total_s": _round(self.figure("total")),
            "tokens_in": int(tokens_in) if tokens_in is not None else None,
            "tokens_out": int(tokens_out) if tokens_out is not None else None,
            "cost_usd": self.figure("cost_usd"), "price_source": first.price_source if first else None,
            "load_s": _round(self.load_s), "memory_bytes": self.memory_bytes, "runs": len(self.runs),
            "error": None if self.error is None else {"message": self.error.message, "hint": self.error.hint,
                                                      "status": self.error.http_status}}


def _value(run: Run, name: str) -> float | None:
    if name == "tokens_in":
        return run.usage.prompt_tokens
    if name == "tokens_out":
        return run.usage.completion_tokens
    value: float | None = getattr(run, name)
    return value


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


async def compare(runtime: Runtime, names: Sequence[str], request: ChatRequest | Sequence[ChatRequest],
                  options: CompareOptions = CompareOptions(), on_text: OnText | None = None) -> list[Compared]:
    """Every model's row, in the order given. ``request``: one for all, or one per model (its own
    settings). ``on_text(index, text)``: each piece of each model's first answer as it arrives (the
    web UI streams the panels)."""
    asked = [request] * len(names) if isinstance(request, ChatRequest) else list(request)
    if len(asked) != len(names):
        raise ValueError("one request per model, or one for all")
    rows = [Compared(name, local=runtime.router.chain(name) is None) for name in names]
    _build_clients(runtime, [row.model for row in rows if not row.local])
    local = [i for i, row in enumerate(rows) if row.local]
    remote = [i for i, row in enumerate(rows) if not row.local]

    def measure(i: int) -> Coroutine[Any, Any, None]:
        emit = None if on_text is None else functools.partial(on_text, i)
        return _measure(runtime, rows[i], asked[i], options, emit)

    async def in_turn() -> None:
        for i in local:
            await measure(i)

    together = local if options.concurrent else []
    await asyncio.gather(*(measure(i) for i in (*remote, *together)), *([] if options.concurrent else [in_turn()]))
    return rows


def _build_clients(runtime: Runtime, names: Sequence[str]) -> None:
    """Each remote target's client built before anything is timed (its library imported, its
    connection pool made), so a first call's time is the upstream's and the wire's. A client that
    cannot be built fails in its run, where the row shows the error."""
    for name in names:
        planned = runtime.router.chain(name)
        for target in planned[0] if planned is not None else ():
            if target.provider is not None:
                with contextlib.suppress(CorralError):
                    runtime.providers.get(target.provider)


async def _measure(runtime: Runtime, row: Compared, request: ChatRequest, options: CompareOptions,
                   emit: OnPiece | None) -> None:
    try:
        if row.local:
            loaded = {m.name for m in runtime.registry.models.values()}
            started = time.perf_counter()
            status = await runtime.load(row.model)
            row.load_s = None if status.name in loaded else time.perf_counter() - started
            row.memory_bytes = status.measured_bytes
        for i in range(options.repeat):
            row.runs.append(await _run(runtime, row.model, request, options.door, emit if i == 0 else None))
    except CorralError as exc:
        row.error = exc


async def _run(runtime: Runtime, name: str, request: ChatRequest, door: Door, emit: OnPiece | None) -> Run:
    call = CallInfo(door, "compare", prompt=request.messages[-1].content if request.messages else None)
    text: list[str] = []
    finish, usage, first = None, Usage(), None
    started = time.perf_counter()
    async for chunk in runtime.run(Task.CHAT, name, request, call):
        if isinstance(chunk, TextChunk):
            if chunk.text and first is None:
                first = time.perf_counter() - started
            text.append(chunk.text)
            if emit is not None and chunk.text:
                emit(chunk.text)
            finish = chunk.finish_reason or finish
            usage = chunk.usage or usage
    total = time.perf_counter() - started
    trace = call.trace
    return Run("".join(text), finish, first, total, usage, trace.cost_usd, trace.price_source, trace.target)
