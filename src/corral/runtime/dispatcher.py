"""The one dispatcher every door reaches through the runtime: check the task, resolve and load the
model, queue for a slot, run the task on the engine, and log and count every call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from corral.engines.base import implementation
from corral.engines.table import ENGINES, EngineSpec, embeds_images, tasks_served
from corral.errors import CorralError, ParameterError, UnsupportedTaskError
from corral.models.store import Entry
from corral.runtime.loader import entry_task, require_task
from corral.runtime.registry import Check, LoadedModel, Registry
from corral.runtime.requestlog import LogRow, RequestLog
from corral.runtime.scheduler import Batcher, Gate, ServingState, queue_full, stream_from_thread
from corral.tasks import TASKS, ChatRequest, EmbedRequest, Progress, Task, Usage

if TYPE_CHECKING:
    from collections.abc import Callable

    from corral.runtime.ledger import Cost
    from corral.runtime.metrics import Metrics

    Pricer = Callable[[str | None, Usage, float], Cost]


class Door(StrEnum):
    """The way a call came in; the request log records it."""

    OPENAI = "openai"
    RERANK = "rerank"  # the rerank API of Cohere, Jina and vLLM (/v1/rerank)
    HF = "hf"
    OLLAMA = "ollama"
    ANTHROPIC = "anthropic"
    RESPONSES = "responses"
    SIDECAR = "sidecar"
    CLI = "cli"
    ADMIN = "admin"  # corral's own admin API (the web UI's compare)


@dataclass
class Trace:
    """What routing and the ledger learn about one call: who served it, after how many attempts, and
    what it cost. The router and the dispatcher fill it in; a door reads it for its headers."""

    target: str | None = None
    attempts: int = 0
    cost_usd: float | None = None
    price_source: str | None = None
    load_ms: float | None = None  # the call loaded its model first: how long that took
    waited_ms: float | None = None  # a remote call: time waiting on upstreams and back-off (not corral's)


@dataclass
class CallInfo:
    """What the log needs to know about a call, from the transport."""

    door: Door
    route: str  # the door's own name for the call: an HTTP path, a JSON-RPC method, a CLI command
    client: str | None = None
    prompt: str | None = None
    via: str | None = None  # the name asked for, when the router chose the model that runs it
    trace: Trace = field(default_factory=Trace)


def outcome(exc: BaseException) -> tuple[int, str]:
    """The status and message a failed call is logged with."""
    if isinstance(exc, CorralError):
        return exc.http_status, exc.message
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError, KeyboardInterrupt)):
        return 499, "client closed the connection"
    return 500, f"{type(exc).__name__}: {exc}"


def task_check(task: Task, engines: Mapping[str, EngineSpec] = ENGINES, request: Any = None) -> Check:
    """A registry check that refuses a model whose files do not serve ``task`` (as the engine table
    ``engines`` says), or a request with images to a model that reads (or embeds) none, before it loads."""
    def check(entry: Entry) -> None:
        entry_task(entry, task, engines=engines)
        check_max_tokens(entry, request)
        if isinstance(request, ChatRequest) and request.images:
            served = tasks_served(entry.info.engine, entry.info.tasks, engines)
            if Task.DESCRIBE_IMAGE not in served:
                raise UnsupportedTaskError(f"{entry.name} does not read images; it serves: "
                                 + ", ".join(sorted(t.value for t in served)),
                                 "send text only, or use an image-text model (LLaVA, Qwen2-VL, SmolVLM, ...)")
        if isinstance(request, EmbedRequest) and request.has_images \
                and not embeds_images(entry.info.engine, entry.info.tasks, engines):
            request.texts(entry.name)  # refused, naming the model, before it loads or joins a batch
    return check


def check_max_tokens(entry: Entry, request: Any) -> None:
    """A ``max_tokens`` the caller asked for that the model can never reach (its whole context or
    more) is refused before the model loads, as OpenAI and vLLM do, rather than clamped silently; a
    door's own default is capped by the context as before."""
    sampling = getattr(request, "sampling", None)
    context = entry.info.context_length
    if sampling is None or not sampling.asked or not context:
        return
    limit = min(context, sampling.context or context)
    if sampling.max_tokens >= limit:
        raise ParameterError("max_tokens", f"max_tokens is {sampling.max_tokens}, but {entry.name} holds {limit} "
                             "tokens in all, prompt and answer together",
                             f"ask for fewer than {limit}, or leave max_tokens out: the answer then runs until the "
                             "model stops or the context is full")


class Tally:
    """What the log records of one streamed call, counted as its chunks pass."""

    def __init__(self, model: str) -> None:
        self.model, self.started = model, time.perf_counter()
        self.ttft: float | None = None
        self.usage, self.status, self.pieces = Usage(), 200, 0
        self.error: str | None = None

    def see(self, chunk: Any) -> None:
        """A streamed chunk: text (counted), audio, a progress step, or a result carrying ``usage``."""
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        elif getattr(chunk, "text", None) or isinstance(chunk, Progress):  # a diffusion step counts as a piece
            self.pieces += 1

    def fail(self, exc: BaseException) -> None:
        self.status, self.error = outcome(exc)
        if self.status == 499:  # generation stopped where the caller left: count the pieces streamed so far
            self.usage = Usage(self.usage.prompt_tokens, self.pieces)


class Dispatcher:
    def __init__(self, registry: Registry, log: RequestLog, metrics: Metrics, *, max_queue: int = 64,
                 engines: Mapping[str, EngineSpec] = ENGINES, pricer: Pricer | None = None,
                 stall_timeout: float | None = None) -> None:
        self.registry, self.log, self.metrics, self.max_queue = registry, log, metrics, max_queue
        self.stall_timeout = stall_timeout if stall_timeout and stall_timeout > 0 else None  # None: never
        self.engines = engines  # the table tasks are checked against before a load
        self.pricer = pricer  # (target, usage, seconds) -> Cost: what a call cost (None: free)

    def serving(self, model: LoadedModel) -> ServingState:
        if model.serving is None:
            model.serving = ServingState(Gate(max(1, model.handler.max_concurrency), self.max_queue))
        return model.serving

    def batcher(self, model: LoadedModel, task: Task) -> Batcher:
        state = self.serving(model)
        if task not in state.batchers:
            observe = (self.metrics.embed_batch.labels(model.name) if task is Task.EMBED
                       else self.metrics.batch_inputs.labels(model.name, task.value)).observe
            state.batchers[task] = Batcher(model.handler, task, on_batch=observe)
        return state.batchers[task]

    def record(self, model: str | None, task: Task, call: CallInfo, status: int, usage: Usage, started: float,
               ttft: float | None, error: str | None, ended: float | None = None) -> None:
        """Count and log one call ``model`` served (for ``call.via``, when the router chose it), priced."""
        total = (time.perf_counter() if ended is None else ended) - started
        label = self.metric_label(model, status)
        self.metrics.observe(label, call.route, status, usage.prompt_tokens, usage.completion_tokens, total, ttft)
        cost = self.settle(model, call, usage, total)
        if cost is not None:
            self.metrics.cost.labels(label or "-", cost.source).inc(cost.usd)
        trace = call.trace
        row = LogRow(call.via or model, call.route, status, usage.prompt_tokens, usage.completion_tokens,
                     None if ttft is None else ttft * 1000, total * 1000, call.client, error, call.prompt,
                     door=call.door.value, task=task.value, target=model, attempts=trace.attempts,
                     cost_usd=cost.usd if cost is not None else 0.0, price_source=cost.source if cost else None)
        self.log.write(row)  # queued; the log's own thread writes it

    def metric_label(self, model: str | None, status: int) -> str | None:
        """The model a call is counted under in the metrics: a client error (4xx) on a name that is no
        loaded model (a name the client made up) counts under "-", since every label value is kept for
        the life of the server: one series per made-up name would grow memory without bound."""
        if 400 <= status < 500 and model not in self.registry.models:
            return None
        return model

    def settle(self, model: str | None, call: CallInfo, usage: Usage, seconds: float) -> Cost | None:
        """Price the call and note who served it in ``call.trace`` (for the door's headers)."""
        cost = self.pricer(model, usage, seconds) if self.pricer is not None else None
        trace = call.trace
        trace.target, trace.attempts = model, max(1, trace.attempts)
        trace.cost_usd, trace.price_source = (cost.usd, cost.source) if cost is not None else (None, None)
        return cost

    def run(self, task: Task, name: str, request: Any, call: CallInfo) -> AsyncIterator[Any]:
        """A streaming task's chunks, or the one result of a batchable task."""
        spec = TASKS.get(task)
        if spec is None:
            raise UnsupportedTaskError(f"corral cannot run {task.value} yet")
        if not isinstance(request, spec.request):
            raise TypeError(f"{task.value} takes a {spec.request.__name__}, not {type(request).__name__}")
        if spec.streams:
            return self.generate(task, name, request, call)
        if spec.batch is None:
            raise UnsupportedTaskError(f"corral cannot run {task.value} yet")  # every one-shot task batches so far
        return self._one(self.batched(task, name, request, call))

    @staticmethod
    async def _one(result: Any) -> AsyncIterator[Any]:
        yield await result

    async def generate(self, task: Task, name: str, request: Any, call: CallInfo) -> AsyncIterator[Any]:
        """Stream a streaming task's chunks (text, audio, progress steps and a result). Errors before
        the first chunk propagate to the caller."""
        tally, cold = Tally(name), not self.registry.is_loaded(name)
        try:
            async with self.registry.use(name, task_check(task, self.engines, request)) as model:
                tally.model = call.trace.target = model.name
                if cold:
                    call.trace.load_ms = (time.perf_counter() - tally.started) * 1000
                method = implementation(model.handler, require_task(model.name, model.handler, task))
                async with self.serving(model).gate.slot(model.name) as slot:
                    chunks = stream_from_thread(lambda: method(request), self.stall_timeout, slot.keep_until)
                    try:
                        async for chunk in chunks:
                            tally.see(chunk)
                            yield chunk
                    finally:  # stop the engine thread before the slot is free (not when the GC gets to it)
                        await chunks.aclose()  # type: ignore[attr-defined]
        except BaseException as exc:
            tally.fail(exc)
            raise
        finally:
            self.record(tally.model, task, call, tally.status, tally.usage, tally.started, tally.ttft, tally.error)

    async def batched(self, task: Task, name: str, request: Any, call: CallInfo) -> Any:
        """One request of a batchable task, sharing an engine call with concurrent ones."""
        started = time.perf_counter()
        status, error, usage, model_name = 200, None, Usage(), name
        cold = not self.registry.is_loaded(name)
        try:
            async with self.registry.use(name, task_check(task, self.engines, request)) as model:
                model_name = model.name
                if cold:
                    call.trace.load_ms = (time.perf_counter() - started) * 1000
                require_task(model.name, model.handler, task)
                batcher = self.batcher(model, task)
                if batcher.pending >= self.max_queue:
                    raise queue_full(model.name, self.max_queue)
                result = await batcher.submit(request)
                usage = result.usage
                return result
        except BaseException as exc:
            status, error = outcome(exc)
            raise
        finally:  # counted and logged in the next loop iteration: after the caller has sent its answer
            ended = time.perf_counter()
            self.settle(model_name, call, usage, ended - started)  # the caller's headers need it now
            asyncio.get_running_loop().call_soon(self.record, model_name, task, call, status, usage, started,
                                                 None, error, ended)
