"""The runtime every door shares, and knows no transport.

``build_runtime(settings, store, options)`` wires the resolver, the registry of loaded models, the
dispatcher (queues, batching, the request log, metrics). ``async with runtime:`` preloads, runs
keep-alive reaping, and on exit unloads every model and closes the log. Doors call ``run`` (every
task, streaming or not as its :data:`~corral.tasks.TASKS` spec says) and the admin methods, which
return dataclasses; the CLI uses :class:`~corral.runtime.sync.SyncRuntime` over the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from corral.config import Settings
from corral.engines.base import LoadOptions
from corral.engines.table import ENGINES, EngineSpec
from corral.errors import BusyError
from corral.models.resolve import Resolver
from corral.models.store import Entry, Store
from corral.remote_media import RemoteMedia
from corral.runtime.dispatcher import CallInfo, Dispatcher
from corral.runtime.ledger import price
from corral.runtime.loader import open_model
from corral.runtime.memory import MemoryProbe
from corral.runtime.metrics import Metrics
from corral.runtime.providers import ProviderPool
from corral.runtime.registry import LoadedModel, Registry
from corral.runtime.requestlog import RequestLog
from corral.runtime.router import Router
from corral.tasks import ChatRequest, Task

if TYPE_CHECKING:
    from corral.models.download import Progress
    from corral.runtime.compare import Compared, CompareOptions


@dataclass(frozen=True)
class RuntimeOptions:
    load: LoadOptions = field(default_factory=LoadOptions)
    budget_bytes: int | None = None  # None: 70% of the free memory
    max_loaded: int = 3
    keep_alive: float = 300.0  # seconds after the last use; negative: forever
    max_queue: int = 64
    log_prompts: bool = False
    preload: tuple[str, ...] = ()
    allow_paths: bool = False  # the CLI accepts file paths as model references; a server never does
    record_memory: bool = True  # store each load's measured memory for later fit decisions
    reap_interval: float = 1.0
    stall_timeout: float = 300.0  # seconds a stream may go without a chunk before it fails (<= 0: never)

    @classmethod
    def from_settings(cls, settings: Settings, load: LoadOptions | None = None) -> RuntimeOptions:
        """The options ``[runtime]`` settings (flags > environment > config file) describe."""
        r = settings.runtime
        load = load or LoadOptions()
        return cls(load=replace(load, parallel=r.parallel, threads=load.threads or r.threads),
                   budget_bytes=r.memory_budget, max_loaded=r.max_loaded,
                   keep_alive=r.keep_alive, max_queue=r.max_queue, log_prompts=r.log_prompts,
                   preload=tuple(r.models), stall_timeout=r.stall_timeout)


@dataclass(frozen=True)
class ModelStatus:
    name: str
    engine: str | None
    format: str
    measured_bytes: int
    estimate_bytes: int
    parallel: int  # sequences decoded together
    in_flight: int
    queued: int
    idle_seconds: float
    expires_in_seconds: float | None  # None: kept forever

    def to_json(self) -> dict[str, Any]:
        """The shape every door reports a loaded model in (``/api/ps``, the sidecar)."""
        return {"name": self.name, "engine": self.engine, "format": self.format,
                "memory": {"measured_bytes": self.measured_bytes, "estimate_bytes": self.estimate_bytes},
                "parallel": self.parallel, "in_flight": self.in_flight, "queued": self.queued,
                "idle_seconds": self.idle_seconds, "expires_in_seconds": self.expires_in_seconds}


@dataclass(frozen=True)
class RuntimeStatus:
    models: tuple[ModelStatus, ...]
    budget_bytes: int
    max_loaded: int
    resident_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"models": [m.to_json() for m in self.models], "budget_bytes": self.budget_bytes,
                "max_loaded": self.max_loaded, "resident_bytes": self.resident_bytes}


class Runtime:
    def __init__(self, settings: Settings, store: Store, options: RuntimeOptions, *,
                 probe: MemoryProbe | None = None, clock: Callable[[], float] = time.monotonic,
                 engines: Mapping[str, EngineSpec] = ENGINES) -> None:
        self.settings, self.store, self.options, self.clock = settings, store, options, clock
        self.engines = engines
        self.resolver = Resolver(settings, store, allow_paths=options.allow_paths)
        self.probe = probe or MemoryProbe()
        self.metrics = Metrics(self._state_rows)
        budget = options.budget_bytes if options.budget_bytes is not None else self.probe.default_budget()
        self.registry = Registry(
            resolve=lambda name: self.resolver.resolve(name, progress=False),
            opener=functools.partial(open_model, engines=engines),
            options=options.load, budget_bytes=budget, max_loaded=options.max_loaded,
            keep_alive=options.keep_alive, probe=self.probe, measurements=store.measurements,
            record=store.record_measurement if options.record_memory else lambda *measured: None,
            listener=self._on_event, clock=clock, engines=engines)
        self.log = RequestLog(settings.data_dir / "requests.db", log_prompts=options.log_prompts)
        self.dispatcher = Dispatcher(self.registry, self.log, self.metrics, max_queue=options.max_queue,
                                     engines=engines, pricer=functools.partial(price, settings),
                                     stall_timeout=options.stall_timeout)
        self.media = RemoteMedia.from_settings(settings)  # what the doors may fetch for image URLs
        self.providers = ProviderPool(settings.providers)
        self.router = Router(settings, self.dispatcher, self.providers, self.metrics, clock=clock)
        self._reaper: asyncio.Task[None] | None = None

    def _on_event(self, event: str, name: str) -> None:
        if event == "loaded":
            self.metrics.loads.labels(name).inc()

    def _state_rows(self) -> list[tuple[str, int, int, int]]:
        return [(m.name, self.dispatcher.serving(m).gate.waiting, m.in_flight, m.measured_bytes)
                for m in list(self.registry.models.values())]

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        for name in self.options.preload:
            await self.registry.get(name)
        self._reaper = asyncio.create_task(self._reap())
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.registry.close()
        await self.providers.aclose()
        await asyncio.to_thread(self.log.close)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.options.reap_interval)
            with contextlib.suppress(Exception):
                await self.registry.reap_idle()

    # --- calls --------------------------------------------------------------------------------

    def run(self, task: Task, model: str, request: Any, call: CallInfo) -> AsyncIterator[Any]:
        """The task's results: a streaming task's chunks, or the one result of any other task."""
        return self.router.run(task, model, request, call)

    async def call(self, task: Task, model: str, request: Any, call: CallInfo) -> Any:
        """The one result of a task that does not stream."""
        stream = self.run(task, model, request, call)
        try:
            return await anext(stream)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def compare(self, names: Sequence[str], request: ChatRequest | Sequence[ChatRequest],
                      options: CompareOptions | None = None,
                      on_text: Callable[[int, str], None] | None = None) -> list[Compared]:
        """One chat request on each model, measured alike (:mod:`corral.runtime.compare`)."""
        from corral.runtime.compare import CompareOptions, compare

        return await compare(self, names, request, options or CompareOptions(), on_text)

    # --- models -------------------------------------------------------------------------------

    async def list_models(self) -> list[Entry]:
        """Registered models, then the built-in system models present (espeak-ng)."""
        from corral.models.system import every_entry

        return await asyncio.to_thread(every_entry, self.store)

    async def pull(self, reference: str, *, progress: Progress = False) -> Entry:
        """Register (downloading first, for a hub repo) the model ``reference`` names. ``progress``:
        a callback receiving :class:`~corral.models.download.PullProgress` events (called from the
        download's thread), True for huggingface_hub's bars on stderr, False for none. Pulling a
        reference already registered changes nothing and returns its entry."""
        return await asyncio.to_thread(self.resolver.resolve, reference, progress=progress)

    async def load(self, name: str) -> ModelStatus:
        return self.describe(await self.registry.get(name))

    async def unload(self, name: str) -> bool:
        return await self.registry.unload(name)

    async def keep_loaded(self, name: str, seconds: float) -> None:
        """Keep the loaded model ``name`` for ``seconds`` after its last use from now on (negative:
        until unloaded; 0: unload as soon as it is idle, which is now when nothing is in flight)."""
        model = self.registry.models.get(name)
        if model is None:
            return
        model.keep_alive = -1.0 if seconds < 0 else seconds
        if seconds == 0 and model.in_flight == 0:
            with contextlib.suppress(BusyError):
                await self.registry.unload(name)

    def describe(self, model: LoadedModel) -> ModelStatus:
        now, keep = self.clock(), self.registry.keep_of(model)
        idle = now - model.last_used
        return ModelStatus(
            model.name, model.entry.info.engine, model.entry.info.format, model.measured_bytes,
            model.estimate_bytes, model.handler.max_concurrency, model.in_flight,
            self.dispatcher.serving(model).gate.waiting, round(idle, 3),
            None if keep < 0 else max(0.0, round(keep - idle, 3)))

    def status(self) -> RuntimeStatus:
        models = tuple(self.describe(m) for m in sorted(self.registry.models.values(), key=lambda m: m.name))
        return RuntimeStatus(models, self.registry.budget_bytes, self.registry.max_loaded,
                             self.registry.resident_bytes())


def build_runtime(settings: Settings, store: Store | None = None, options: RuntimeOptions | None = None, *,
                  probe: MemoryProbe | None = None, clock: Callable[[], float] = time.monotonic,
                  engines: Mapping[str, EngineSpec] = ENGINES) -> Runtime:
    """The runtime ``settings`` describe: the manifest at ``settings.manifest_path`` and the
    ``[runtime]`` options unless given. ``clock`` (seconds, monotonic) drives keep-alive, so tests
    can move time; ``engines`` is the engine table every task check and load reads (tests add a
    fake engine's row)."""
    return Runtime(settings, store or Store(settings.manifest_path), options or RuntimeOptions.from_settings(settings),
                   probe=probe, clock=clock, engines=engines)
