"""The runtime for synchronous callers (the CLI).

One event loop on a background thread holds the runtime (registry, log, reaper). A streaming
call runs the engine in the caller's own thread: a single CLI stream keeps the engine's speed (a
per-token hand-off between threads cost 9-15% of single-stream decode on 2 cores, measured), and
Ctrl-C lands where the tokens are made. Every call is checked, logged and counted as on any other
door: the model is acquired and released through the registry, the log row written by the
dispatcher. A name the router serves (remote, a chain) streams through the router on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar

from corral.engines.base import implementation
from corral.runtime.dispatcher import CallInfo, Tally, task_check
from corral.runtime.loader import require_task
from corral.runtime.runtime import Runtime
from corral.tasks import TASKS, Task

T = TypeVar("T")
LOOP_CHECK_S = 0.1  # how often a waiting caller looks at Ctrl-C and at the loop thread


class Interrupts:
    """Ctrl-C, taken at safe points. While active (in the main thread), SIGINT only sets a flag;
    :meth:`check` raises KeyboardInterrupt where the caller chooses: between two chunks, between
    two polls of a future. Raised wherever the signal happened to land, KeyboardInterrupt can
    break a lock inside ``threading`` or an engine (seen: "cannot release un-acquired lock" from
    a future's condition, and a session whose next Ctrl-C went unanswered)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, lambda _sig, _frame: self.requested.set())
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def check(self) -> None:
        if self.requested.is_set():
            self.requested.clear()
            raise KeyboardInterrupt


class SyncRuntime:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="corral-runtime", daemon=True)

    def _run_loop(self) -> None:
        # Ctrl-C is the caller's: with SIGINT blocked here (and in every thread this one starts:
        # executor workers, engine threads inherit the mask) the kernel never hands it to them.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        self.loop.run_forever()

    def __enter__(self) -> SyncRuntime:
        self._thread.start()
        self.wait(self.runtime.__aenter__())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.wait(self.runtime.__aexit__(kind, exc, tb), interruptible=False)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()

    def wait(self, work: Coroutine[Any, Any, T], give_back: Callable[[T], None] | None = None, *,
             interruptible: bool = True) -> T:
        """Run ``work`` on the runtime's loop. Ctrl-C while waiting cancels it; should it finish all
        the same, ``give_back`` receives its result on the loop (a model acquired anyway is released)."""
        with Interrupts() as interrupts:
            return self._wait(work, give_back, interrupts if interruptible else None)

    def _wait(self, work: Coroutine[Any, Any, T], give_back: Callable[[T], None] | None,
              interrupts: Interrupts | None) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        try:
            result = self._result(future, interrupts)
            if interrupts is not None:
                interrupts.check()  # a Ctrl-C that came as the work finished still counts
            return result
        except BaseException:
            future.cancel()
            if give_back is not None:
                loop, back = self.loop, give_back
                future.add_done_callback(lambda done: None if done.cancelled() or done.exception()
                                         else loop.call_soon_threadsafe(back, done.result()))
            raise

    def _result(self, future: concurrent.futures.Future[T], interrupts: Interrupts | None) -> T:
        """The future's result; an error, not a hang, if the runtime's loop thread has died."""
        while True:
            try:
                return future.result(timeout=LOOP_CHECK_S)
            except concurrent.futures.TimeoutError:
                if interrupts is not None:
                    interrupts.check()
                if not self._thread.is_alive():
                    raise RuntimeError("the runtime's event loop stopped") from None

    def stream(self, task: Task, name: str, request: Any, call: CallInfo) -> Generator[Any, None, None]:
        """A streaming task's chunks (text, audio, progress: the task's own), made in the caller's thread."""
        if not TASKS[task].streams:
            raise ValueError(f"{task.value} does not stream; use call()")
        name, request, call = self.runtime.router.presets(name, request, call)  # MODEL@MODE, a config preset
        if self.runtime.router.chain(name) is not None:  # remote, or a chain: the router's path, on the loop
            yield from self._routed(task, name, request, call)
            return
        registry, tally, model = self.runtime.registry, Tally(name), None
        with Interrupts() as interrupts:  # Ctrl-C acts between steps: the wait, then between two chunks
            try:
                check = task_check(task, self.runtime.engines)
                model = self._wait(registry.acquire(name, check), registry.release, interrupts)
                tally.model = model.name
                chunks = implementation(model.handler, require_task(model.name, model.handler, task))(request)
                try:
                    for chunk in chunks:
                        interrupts.check()
                        tally.see(chunk)
                        yield chunk
                        interrupts.check()
                finally:
                    chunks.close()  # stops generation when the caller stopped early
            except BaseException as exc:
                tally.fail(exc)
                raise
            finally:
                if model is not None:
                    self.loop.call_soon_threadsafe(registry.release, model)
                self.runtime.dispatcher.record(tally.model, task, call, tally.status, tally.usage, tally.started,
                                               tally.ttft, tally.error)

    def _routed(self, task: Task, name: str, request: Any, call: CallInfo) -> Generator[Any, None, None]:
        """A routed stream's chunks, each awaited on the runtime's loop (the router logs the call)."""
        stream = self.runtime.run(task, name, request, call)

        async def step() -> Any:
            return await anext(stream)

        with Interrupts() as interrupts:
            try:
                while True:
                    try:
                        chunk = self._wait(step(), None, interrupts)
                    except StopAsyncIteration:
                        return
                    yield chunk
            finally:
                self.wait(stream.aclose(), interruptible=False)  # type: ignore[attr-defined]

    def call(self, task: Task, name: str, request: Any, call: CallInfo) -> Any:
        """The one result of a task that does not stream, through the runtime's own path."""
        return self.wait(self.runtime.call(task, name, request, call))
