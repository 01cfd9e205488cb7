"""Scheduling work onto loaded models: bounded per-model queues, streams bridged from engine
threads to asyncio with cancellation, and micro-batching of concurrent requests of a batchable task."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from corral.engines.base import Handler, implementation
from corral.errors import BusyError, StalledError
from corral.tasks import TASKS, EmbedRequest, EmbedResult, Task

T = TypeVar("T")
_END = object()
BACKLOG = 256  # chunks a stream's engine may produce ahead of its reader before it waits


def queue_full(model: str, limit: int) -> BusyError:
    """The 429 for a model whose queue already holds ``limit`` waiting requests."""
    return BusyError(f"the queue for {model} is full ({limit} waiting)", "retry after the time in Retry-After",
                     retry_after=1, status=429)


class Slot:
    """One request's place in a :class:`Gate`. A stream whose engine stalled hands the slot to the
    engine thread (:meth:`keep_until`): it comes back when that thread ends, not when the request does."""

    def __init__(self) -> None:
        self.held_until: asyncio.Future[None] | None = None

    def keep_until(self, done: asyncio.Future[None]) -> None:
        self.held_until = done


class Gate:
    """At most ``slots`` requests run at once; at most ``max_queue`` wait; beyond that: 429."""

    def __init__(self, slots: int, max_queue: int) -> None:
        self.slots, self.max_queue = slots, max_queue
        self._sem = asyncio.Semaphore(slots)
        self.waiting = 0
        self.running = 0
        self.stalled = 0  # slots held by engine threads that stalled (their requests have ended)

    @asynccontextmanager
    async def slot(self, model: str) -> AsyncIterator[Slot]:
        if self._sem.locked() and self.waiting >= self.max_queue:
            raise queue_full(model, self.max_queue)
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        slot = Slot()
        try:
            yield slot
        finally:
            self.running -= 1
            held = slot.held_until
            if held is None or held.done():
                self._sem.release()
            else:
                self.stalled += 1
                held.add_done_callback(self._stall_ended)

    def _stall_ended(self, _: asyncio.Future[None]) -> None:
        self.stalled -= 1
        self._sem.release()


def stalled(seconds: float) -> StalledError:
    """The 504 for a stream whose engine produced nothing for ``seconds``."""
    return StalledError(f"the model produced nothing for {seconds:g} s (the stall timeout)",
                        "try again; if the model is slow rather than stuck (a long prompt on a CPU), raise "
                        "--stall-timeout (-1 turns it off)")


class _EngineThread:
    """The thread that runs one stream's engine iterator: its items go onto the loop's queue, at most
    BACKLOG ahead of the reader; ``ended`` completes when the thread is done."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.stop = threading.Event()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.credit = threading.Semaphore(BACKLOG)  # chunks the engine may be ahead of its reader

    def put(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def work(self, make: Callable[[], Iterator[Any]]) -> None:
        try:
            iterator = make()
            try:
                for item in iterator:
                    self.credit.acquire()  # a reader that does not keep up (a slow client) pauses the engine
                    self.put(item)
                    if self.stop.is_set():
                        break
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the consumer
            self.put(exc)
        finally:
            self.put(_END)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                self.loop.call_soon_threadsafe(_settle, self.ended)

    def halt(self) -> None:
        """Stop after the current item; an engine paused for its reader goes on, sees the stop and ends."""
        self.stop.set()
        self.credit.release(BACKLOG)


async def stream_from_thread(make: Callable[[], Iterator[T]], stall: float | None = None,
                             on_stall: Callable[[asyncio.Future[None]], None] | None = None) -> AsyncIterator[T]:
    """Run a blocking iterator in its own thread and yield its items on the event loop.

    When the consumer stops early (client gone, task cancelled), the thread closes the engine's
    iterator after its current item, which stops generation and frees the model's slot. The engine
    runs at most BACKLOG chunks ahead of the consumer (memory stays bounded for a client that does
    not read). With a ``stall`` timeout, no item for that many seconds raises :class:`StalledError` at
    once; the thread is told to stop and ``on_stall`` receives a future that completes when it has
    ended (the engine is still busy until then: the caller keeps its slot taken).
    """
    engine = _EngineThread(asyncio.get_running_loop())
    thread = threading.Thread(target=engine.work, args=(make,), name="corral-stream", daemon=True)
    thread.start()
    handed = False  # the engine stalled: its thread's end is the caller's to wait for
    try:
        while True:
            try:
                item = await asyncio.wait_for(engine.queue.get(), stall) if stall else await engine.queue.get()
            except TimeoutError:
                if on_stall is not None:
                    on_stall(engine.ended)
                    handed = True
                raise stalled(stall or 0) from None
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            engine.credit.release()
            yield item  # type: ignore[misc]
    finally:
        engine.halt()
        if not handed:
            await _join(engine.ended)


async def _join(ended: asyncio.Future[None]) -> None:
    """Wait for the engine thread to end (``ended`` completes as it does), even under cancellation:
    a response task that anyio's cancel scope cancelled (a client that left) is cancelled again at
    every await, and a join given up would free the model's slot while its engine still runs. The
    cancellation is re-raised once the thread has ended (it stops after its current item)."""
    cancelled = False
    while not ended.done():
        try:
            await asyncio.shield(ended)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


GATHER_GAP_S = 0.001
GATHER_MAX_S = 0.010


@dataclass
class ServingState:
    """One loaded model's serving state: its queue and, per batchable task, its batcher."""

    gate: Gate
    batchers: dict[Task, Batcher] = field(default_factory=dict)


class Batcher:
    """Concurrent requests of one batchable task to one model become one engine call (one forward
    pass), as the task's :class:`~corral.tasks.BatchRule` merges and splits them.

    Before a batch the batcher may wait while requests are still arriving (one more every
    ``GATHER_GAP_S``), for at most ``GATHER_MAX_S``; requests that arrive while a batch runs join
    the next one (up to ``max_inputs``). So a burst of requests parsed one after another shares a
    forward pass instead of the first running alone.

    The wait is for bursts only. It happens when more than one request is already queued, or
    when the previous batch held more than one request (bursts come in series). After a batch of
    one request, a request that finds itself alone yields to the event loop once (requests parsed
    in the same loop iteration join) and then runs at once, without the gap: a client sending one
    request at a time never waits. The first request of a new burst after lone requests may then
    run alone; the rest gather while it runs, and the bursts after it wait as above. A new batcher
    starts as if after a burst. ``sleep`` is injectable for tests.
    """

    def __init__(self, handler: Handler, task: Task, max_inputs: int = 256,
                 on_batch: Callable[[int], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        rule = TASKS[task].batch
        assert rule is not None, f"{task.value} is not batchable"
        self.handler, self.task, self.rule, self.max_inputs = handler, task, rule, max_inputs
        self.method = implementation(handler, task)
        self.on_batch = on_batch or (lambda n: None)
        self.sleep = sleep
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running = False
        self._after_burst = True  # the last batch held more than one request (or there was none yet)
        # One engine thread per model, not any thread of the default pool: torch's OpenMP team is
        # per calling thread, and a different caller each time keeps several teams spinning on the
        # same cores. The thread ends when the batcher (its model unloaded) is collected.
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"corral-{task.value}")
        weakref.finalize(self, self._engine.shutdown, False)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, request: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._gather()
                batch: list[tuple[Any, asyncio.Future[Any]]] = []
                size = 0
                while self._pending and (not batch or size + self.rule.size(self._pending[0][0]) <= self.max_inputs):
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += self.rule.size(item[0])
                self._after_burst = len(batch) > 1
                await self._run(batch)
        finally:
            self._running = False

    async def _gather(self) -> None:
        """Let requests that are arriving join (see the class docstring for when this waits): while
        the queue still grows (a request every GATHER_GAP_S or faster), at most GATHER_MAX_S."""
        if len(self._pending) == 1 and not self._after_burst:
            await asyncio.sleep(0)  # one loop iteration: requests already being parsed join
            if len(self._pending) == 1:
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_MAX_S
        while True:
            before = len(self._pending)
            await self.sleep(GATHER_GAP_S)
            inputs = sum(self.rule.size(request) for request, _ in self._pending)
            if len(self._pending) == before or inputs >= self.max_inputs or loop.time() >= deadline:
                return

    async def _run(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        groups: dict[object, list[tuple[Any, asyncio.Future[Any]]]] = {}
        for item in batch:
            groups.setdefault(self.rule.key(item[0]), []).append(item)
        for items in groups.values():
            requests = [request for request, _ in items]
            self.on_batch(sum(self.rule.size(r) for r in requests))
            try:
                merged = self.rule.merge(requests)
                call = functools.partial(contextvars.copy_context().run, self.method, merged)
                result = await asyncio.get_running_loop().run_in_executor(self._engine, call)
                results = self.rule.split(result, requests)
            except BaseException as exc:
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), one in zip(items, results, strict=True):
                if not fut.done():
                    fut.set_result(one)


class EmbedBatcher(Batcher):
    """The embed task's batcher, with ``embed(request)``."""

    def __init__(self, handler: Handler, max_inputs: int = 256, on_batch: Callable[[int], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(handler, Task.EMBED, max_inputs, on_batch, sleep)

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        result: EmbedResult = await self.submit(request)
        return result
