"""The registry of loaded models: load on first use (once, however many ask at the same time),
keep for keep_alive after the last use, evict the least recently used idle model when the memory
budget or the count limit would be exceeded, and record the memory each load really took."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.engines.base import Handler, LoadOptions
from corral.engines.table import ENGINES, EngineSpec
from corral.errors import BusyError, InsufficientMemoryError
from corral.models.memory import estimate_for
from corral.models.store import Entry
from corral.runtime.loader import import_engine
from corral.runtime.memory import MemoryProbe, human

if TYPE_CHECKING:
    from corral.runtime.scheduler import ServingState


@dataclass
class LoadedModel:
    entry: Entry
    handler: Handler
    need_bytes: int  # what fit decisions count for it: measured after load
    estimate_bytes: int
    measured_bytes: int
    loaded_at: float
    last_used: float
    in_flight: int = 0
    serving: ServingState | None = None  # the dispatcher's queue and batchers for this model
    keep_alive: float | None = None  # this model's own keep-alive (a request set it); None: the registry's

    @property
    def name(self) -> str:
        return self.entry.name


Opener = Callable[[Entry, LoadOptions], Handler]
Check = Callable[[Entry], None]
Listener = Callable[[str, str], None]  # (event, model name): "loaded" | "unloaded" | "evicted"


class Registry:
    def __init__(self, *, resolve: Callable[[str], Entry], opener: Opener, options: LoadOptions,
                 budget_bytes: int, max_loaded: int, keep_alive: float, probe: MemoryProbe,
                 measurements: Callable[[], dict[str, int]],
                 record: Callable[[str, int, str], None], listener: Listener | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 engines: Mapping[str, EngineSpec] = ENGINES) -> None:
        self._resolve, self._open, self.options = resolve, opener, options
        self.engines = engines  # the engine table a load imports its libraries from
        self.budget_bytes, self.max_loaded, self.keep_alive = budget_bytes, max_loaded, keep_alive
        self._probe, self._measurements, self._record = probe, measurements, record
        self._listener = listener or (lambda event, name: None)
        self.clock = clock
        self.models: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}
        self._reserved: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._names: dict[str, str] = {}  # requested name or alias -> registered name, for loaded models

    # --- sizing -------------------------------------------------------------------------------

    def need_for(self, entry: Entry) -> tuple[int, int]:
        """(bytes to plan for, estimate for this registry's load options): the measured figure once there is one."""
        estimate = estimate_for(entry.info, self.options, gpu=self._probe.uses_gpu(self.options.device),
                                dtype=self.options.dtype)
        measured = self._measurements().get(entry.name)
        return (measured if measured else estimate), estimate

    def resident_bytes(self) -> int:
        return sum(m.need_bytes for m in self.models.values()) + sum(self._reserved.values())

    # --- use ----------------------------------------------------------------------------------

    async def resolve(self, name: str) -> Entry:
        return await asyncio.to_thread(self._resolve, name)

    @asynccontextmanager
    async def use(self, name: str, check: Check | None = None) -> AsyncIterator[LoadedModel]:
        model = await self.acquire(name, check)
        try:
            yield model
        finally:
            self.release(model)

    async def acquire(self, name: str, check: Check | None = None) -> LoadedModel:
        """The loaded model, counted in flight (so never evicted) until :meth:`release`."""
        model = await self.get(name, check)
        model.in_flight += 1
        return model

    def release(self, model: LoadedModel) -> None:
        model.in_flight -= 1
        model.last_used = self.clock()

    def is_loaded(self, name: str) -> bool:
        """Whether ``name`` (a model or an alias used before) is loaded now."""
        canonical = self._names.get(name)
        return canonical is not None and canonical in self.models

    async def get(self, name: str, check: Check | None = None) -> LoadedModel:
        """The loaded model ``name`` names, loading it first if needed. ``check`` sees the registered
        entry before anything is loaded or evicted for it, and may refuse it by raising."""
        canonical = self._names.get(name)
        loaded = self.models.get(canonical) if canonical else None
        if loaded is not None:  # the hot path: no manifest lookup for a model already loaded
            if check is not None:  # the request's own checks (images to a model that reads none) still apply
                check(loaded.entry)
            loaded.last_used = self.clock()
            return loaded
        entry = await self.resolve(name)
        if check is not None:
            check(entry)
        self._names[name] = entry.name
        async with self._lock:
            loaded = self.models.get(entry.name)
            if loaded is not None:
                loaded.last_used = self.clock()
                return loaded
            future = self._loading.get(entry.name)
            if future is None:
                await self._make_room(entry)  # raises before anything is reserved when it cannot fit
                future = asyncio.get_running_loop().create_future()
                self._loading[entry.name] = future
                asyncio.get_running_loop().create_task(self._load(entry, future))
        return await asyncio.shield(future)

    async def _make_room(self, entry: Entry) -> None:
        """Reserve room for ``entry`` (lock held), evicting idle models least recently used first."""
        need, _ = self.need_for(entry)
        if need > self.budget_bytes:
            raise InsufficientMemoryError(
                f"{entry.name} needs about {human(need)} but the memory budget is {human(self.budget_bytes)}",
                "raise --memory-budget, or use a smaller or more quantized model")
        while (self.resident_bytes() + need > self.budget_bytes
               or len(self.models) + len(self._reserved) >= self.max_loaded):
            # a model already loading is not evictable: wait for room like any busy model
            idle = sorted((m for m in self.models.values() if m.in_flight == 0), key=lambda m: m.last_used)
            if not idle:
                raise BusyError(f"cannot load {entry.name} now: every loaded model is busy and no room is left",
                                "retry shortly", retry_after=2)
            await self._evict(idle[0], "evicted")
        self._reserved[entry.name] = need

    async def _evict(self, model: LoadedModel, event: str) -> None:
        """Unload ``model`` (lock held). It leaves ``models`` on the event loop, so no request can pick it
        up any more; the unload itself (freeing weights, stopping engine threads) runs off the loop."""
        self.models.pop(model.name, None)
        await asyncio.to_thread(self._release, model)
        self._listener(event, model.name)

    @staticmethod
    def _release(model: LoadedModel) -> None:
        model.handler.unload()
        gc.collect()

    async def _open_handler(self, entry: Entry) -> Handler:
        """Open ``entry``. Running out of memory while it loads is a 507 naming what it needs and what is
        free; what the failed load had allocated is collected first."""
        try:
            return await asyncio.to_thread(self._open, entry, self.options)
        except MemoryError as exc:  # raised below, outside this block: the failed load's frames are let go
            said = (str(exc).strip().splitlines() or [""])[0][:200]
        gc.collect()
        need, _ = self.need_for(entry)
        free, where = self._probe.free_bytes(self.options.device)
        raise InsufficientMemoryError(
            f"{entry.name} ran out of memory while loading{f' ({said})' if said else ''}: it needs about "
            f"{human(need)} and {human(free)} is free {where}",
            "unload other models (`corral ps`; POST /api/models/NAME/unload), close other programs, "
            "or use a smaller or more quantized model")

    async def _load(self, entry: Entry, future: asyncio.Future[LoadedModel]) -> None:
        try:
            with suppress(Exception):  # a missing engine is reported by the load itself
                await asyncio.to_thread(import_engine, entry, self.engines)
            before = self._probe.snapshot(self.options.device)
            handler = await self._open_handler(entry)
            measured = self._probe.delta(before, self.options.device)
            _, estimate = self.need_for(entry)
            measured = max(measured, 1)
            await asyncio.to_thread(self._record, entry.name, measured, self._probe.device_name(self.options.device))
            now = self.clock()
            loaded = LoadedModel(entry, handler, need_bytes=measured, estimate_bytes=estimate,
                                 measured_bytes=measured, loaded_at=now, last_used=now)
            async with self._lock:
                self.models[entry.name] = loaded
            self._listener("loaded", entry.name)
            future.set_result(loaded)
        except BaseException as exc:  # the waiting requests get the error, not a hang
            if not future.done():
                future.set_exception(exc)
            with suppress(Exception):
                future.exception()  # mark retrieved: a load nobody awaits any more is not an "unhandled" error
        finally:
            async with self._lock:
                self._reserved.pop(entry.name, None)
                self._loading.pop(entry.name, None)

    # --- admin and lifecycle ------------------------------------------------------------------

    async def unload(self, name: str) -> bool:
        entry = await self.resolve(name)
        async with self._lock:
            model = self.models.get(entry.name)
            if model is None:
                return False
            if model.in_flight:
                raise BusyError(f"{entry.name} is serving {model.in_flight} request(s); unload it when idle",
                                retry_after=2, status=409)
            await self._evict(model, "unloaded")
            return True

    def keep_of(self, model: LoadedModel) -> float:
        """How long ``model`` stays loaded after its last use (negative: forever)."""
        return self.keep_alive if model.keep_alive is None else model.keep_alive

    async def reap_idle(self) -> list[str]:
        """Unload models idle for longer than their keep-alive (negative: never)."""
        now = self.clock()
        gone = []
        async with self._lock:
            for model in list(self.models.values()):
                keep = self.keep_of(model)
                if keep >= 0 and model.in_flight == 0 and now - model.last_used >= keep:
                    await self._evict(model, "unloaded")
                    gone.append(model.name)
        return gone

    async def close(self) -> None:
        async with self._lock:
            for model in list(self.models.values()):
                await self._evict(model, "unloaded")
