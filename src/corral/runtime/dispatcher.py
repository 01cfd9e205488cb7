"""The one dispatcher every transport calls: resolve and load the model, queue for a slot,
run the task on the engine, and log and count every request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

from corral.engines.base import implementation
from corral.errors import CorralError
from corral.runtime.loader import require_task
from corral.runtime.metrics import Metrics
from corral.runtime.registry import LoadedModel, Registry
from corral.runtime.requestlog import LogRow, RequestLog
from corral.runtime.scheduler import EmbedBatcher, Gate, queue_full, stream_from_thread
from corral.tasks import ChatRequest, CompletionRequest, EmbedRequest, EmbedResult, Task, TextChunk, Usage


class Door(StrEnum):
    """The way a call came in; the request log records it."""

    OPENAI = "openai"
    HF = "hf"
    OLLAMA = "ollama"
    ANTHROPIC = "anthropic"
    RESPONSES = "responses"
    SIDECAR = "sidecar"
    CLI = "cli"


@dataclass
class CallInfo:
    """What the log needs to know about a call, from the transport."""

    door: Door
    route: str  # the door's own name for the call: an HTTP path, a JSON-RPC method, a CLI command
    client: str | None = None
    prompt: str | None = None


def outcome(exc: BaseException) -> tuple[int, str]:
    """The status and message a failed call is logged with."""
    if isinstance(exc, CorralError):
        return exc.http_status, exc.message
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        return 499, "client closed the connection"
    return 500, f"{type(exc).__name__}: {exc}"


class Dispatcher:
    def __init__(self, registry: Registry, log: RequestLog, metrics: Metrics, *, max_queue: int = 64) -> None:
        self.registry, self.log, self.metrics, self.max_queue = registry, log, metrics, max_queue

    def gate(self, model: LoadedModel) -> Gate:
        gate = model.extras.get("gate")
        if not isinstance(gate, Gate):
            gate = Gate(max(1, model.handler.max_concurrency), self.max_queue)
            model.extras["gate"] = gate
        return gate

    def batcher(self, model: LoadedModel) -> EmbedBatcher:
        batcher = model.extras.get("embed_batcher")
        if not isinstance(batcher, EmbedBatcher):
            batcher = EmbedBatcher(model.handler, on_batch=self.metrics.embed_batch.labels(model.name).observe)
            model.extras["embed_batcher"] = batcher
        return batcher

    async def _record(self, model: str | None, task: Task, call: CallInfo, status: int, usage: Usage,
                      started: float, ttft: float | None, error: str | None) -> None:
        total = time.perf_counter() - started
        self.metrics.observe(model, call.route, status, usage.prompt_tokens, usage.completion_tokens, total, ttft)
        row = LogRow(model, call.route, status, usage.prompt_tokens, usage.completion_tokens,
                     None if ttft is None else ttft * 1000, total * 1000, call.client, error, call.prompt,
                     door=call.door.value, task=task.value)
        self.log.write(row)  # queued; the log's own thread writes it

    async def generate(self, task: Task, name: str, request: ChatRequest | CompletionRequest,
                       call: CallInfo) -> AsyncIterator[TextChunk]:
        """Stream a chat or completion. Errors before the first chunk propagate to the caller."""
        started = time.perf_counter()
        ttft: float | None = None
        usage, status, error, model_name = Usage(), 200, None, name
        pieces = 0
        try:
            async with self.registry.use(name) as model:
                model_name = model.name
                require_task(model.name, model.handler, task)
                method = implementation(model.handler, task)
                async with self.gate(model).slot(model.name):
                    async for chunk in stream_from_thread(lambda: method(request)):  # type: ignore[arg-type]
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        if chunk.usage is not None:
                            usage = chunk.usage
                        elif chunk.text:
                            pieces += 1
                        yield chunk
        except BaseException as exc:
            status, error = outcome(exc)
            if status == 499:  # generation stopped where the client left: log the pieces streamed so far
                usage = Usage(usage.prompt_tokens, pieces)
            raise
        finally:
            await asyncio.shield(self._record(model_name, task, call, status, usage, started, ttft, error))

    async def embed(self, name: str, request: EmbedRequest, call: CallInfo) -> EmbedResult:
        started = time.perf_counter()
        status, error, usage, model_name = 200, None, Usage(), name
        try:
            async with self.registry.use(name) as model:
                model_name = model.name
                require_task(model.name, model.handler, Task.EMBED)
                batcher = self.batcher(model)
                if batcher.pending >= self.max_queue:
                    raise queue_full(model.name, self.max_queue)
                result = await batcher.embed(request)
                usage = result.usage
                return result
        except BaseException as exc:
            status, error = outcome(exc)
            raise
        finally:
            await asyncio.shield(self._record(model_name, Task.EMBED, call, status, usage, started, None, error))
