"""The router: which target serves a call, and what happens when one fails.

A model name is one of: a configured alias chain (``[aliases]`` with several targets or a context
fallback), a remote name ``PROVIDER/UPSTREAM_ID`` of a configured provider, or anything else, which
goes straight to the local dispatcher (no router cost for local calls). A chain's targets are tried
in order:

- a retryable failure (connect error, timeout, 408/409/429/5xx, overloaded; for a local target a
  full queue or no memory to load) is retried with exponential back-off and jitter, at least the
  upstream's ``Retry-After``, up to the target's ``retries.max``; then the next target is tried;
- a non-retryable failure (400, 401/403 as 502, 404, 422) is the answer at once; a prompt too long
  for a target goes to the alias's ``context_fallback`` when it has one;
- a stream is committed to its target once the first chunk with content has reached the caller:
  a failure after that ends the stream with an error (:class:`StreamBrokenError`, which the doors
  send in-band), never a switch to another target that would splice two models' answers;
- a target that failed ``cooldown.failures`` times within ``cooldown.window`` seconds is skipped
  for ``cooldown.seconds``; the chain goes on without it;
- when every target failed, an alias answers :class:`ChainFailedError` (503) listing each failure; a
  remote name asked for directly (no alias) answers its own last failure (504 for a timeout, 429).

Time (``clock``), waiting (``sleep``) and jitter (``random``) are passed in, so tests check the
back-off without waiting for it."""

from __future__ import annotations

import asyncio
import contextlib
import random as random_module
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from corral.engines.remote.base import RemoteError
from corral.errors import BusyError, ContextLengthError, CorralError, InsufficientMemoryError, MissingDependencyError
from corral.models.remote import routed_targets
from corral.runtime.dispatcher import CallInfo, Tally, Trace
from corral.targets import AliasSettings, Cooldown, Retries, split_remote
from corral.tasks import TASKS, Task, Usage

if TYPE_CHECKING:
    from corral.config import Settings
    from corral.runtime.dispatcher import Dispatcher
    from corral.runtime.metrics import Metrics
    from corral.runtime.providers import ProviderPool

LOCAL_RETRIES = Retries(max=0)  # a local target is not retried: the next target is tried at once
LOCAL_COOLDOWN = Cooldown()


class StreamBrokenError(CorralError):
    """A committed stream failed: the caller already has part of the answer."""

    http_status = 502


class ChainFailedError(CorralError):
    """Every target of a chain failed or was cooling down."""

    http_status = 503


@dataclass(frozen=True)
class Target:
    ref: str  # as the alias names it
    provider: str | None = None  # None: a local model
    upstream: str | None = None


@dataclass
class Attempts:
    """What a routed call went through, for its log row and its headers."""

    count: int = 0
    served_by: str | None = None
    notes: list[str] = field(default_factory=list)


class Health:
    """Failures per target in a sliding window, and when each cooled target may be tried again."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}
        self.cooled_until: dict[str, float] = {}

    def cooling(self, ref: str) -> bool:
        until = self.cooled_until.get(ref)
        if until is None:
            return False
        if self.clock() >= until:
            del self.cooled_until[ref]
            return False
        return True

    def failed(self, ref: str, rule: Cooldown) -> bool:
        """Count a failure; True when it cooled the target down."""
        now = self.clock()
        seen = self.failures.setdefault(ref, deque())
        seen.append(now)
        while seen and seen[0] < now - rule.window:
            seen.popleft()
        if len(seen) >= rule.failures:
            self.cooled_until[ref] = now + rule.seconds
            seen.clear()
            return True
        return False

    def succeeded(self, ref: str) -> None:
        self.failures.pop(ref, None)


class Router:
    def __init__(self, settings: Settings, dispatcher: Dispatcher, providers: ProviderPool, metrics: Metrics, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 random: Callable[[], float] = random_module.random) -> None:
        self.settings, self.dispatcher, self.providers, self.metrics = settings, dispatcher, providers, metrics
        self.clock, self.sleep, self.random = clock, sleep, random
        self.health = Health(clock)

    def chain(self, name: str) -> tuple[list[Target], AliasSettings | None] | None:
        """The targets ``name`` routes to, or None for a name the dispatcher serves directly."""
        targets = routed_targets(self.settings, name)
        if targets is None:
            return None
        return [self.target(ref) for ref in targets], self.settings.aliases.get(name)

    def target(self, ref: str) -> Target:
        remote = split_remote(ref, self.settings.providers)
        return Target(ref) if remote is None else Target(ref, *remote)

    def run(self, task: Task, name: str, request: Any, call: CallInfo) -> AsyncIterator[Any]:
        name, request, call = self.presets(name, request, call)
        planned = self.chain(name)
        if planned is None:
            return self.dispatcher.run(task, name, request, call)
        targets, alias = planned
        return self._routed(task, name, targets, alias, request, call)

    def presets(self, name: str, request: Any, call: CallInfo) -> tuple[str, Any, CallInfo]:
        """The name to route and the request with the defaults of the presets ``name`` stands for
        (a mode, ``MODEL@MODE``, then a config preset ``MODEL`` may be; :mod:`corral.presets`)."""
        from corral.presets import apply_preset, find_preset

        for _ in range(2):
            found = find_preset(self.settings, name)
            if found is None:
                break
            routed, preset = found
            request = apply_preset(preset, request, name, mode=routed != name)
            call = replace(call, via=call.via or name)  # logged as the name asked for
            if routed == name:
                break
            name = routed
        return name, request, call

    def _rules(self, target: Target) -> tuple[Retries, Cooldown]:
        if target.provider is None:
            return LOCAL_RETRIES, LOCAL_COOLDOWN
        settings = self.settings.providers[target.provider]
        return settings.retries, settings.cooldown

    def _open(self, task: Task, target: Target, request: Any, call: CallInfo) -> AsyncIterator[Any]:
        if target.provider is None:
            return self.dispatcher.run(task, target.ref, request, call)
        return self.providers.get(target.provider).run(task, target.upstream or "", request)

    async def _routed(self, task: Task, name: str, targets: list[Target], alias: AliasSettings | None,
                      request: Any, call: CallInfo) -> AsyncIterator[Any]:
        attempts, errors = Attempts(), []
        last: RemoteError | None = None
        call = replace(call, via=name)  # logged as the name asked for, with the target that served it
        queue = list(targets)
        while queue:
            target = queue.pop(0)
            if self.health.cooling(target.ref):
                attempts.notes.append(f"{target.ref}: cooling down")
                continue
            try:
                stream, first, started = await self._first(task, target, request, call, attempts)
            except RemoteError as exc:
                if exc.too_long and alias is not None and alias.context_fallback and \
                        alias.context_fallback not in [t.ref for t in queue]:
                    queue.insert(0, self.target(alias.context_fallback))
                errors.append(f"{target.ref}: {exc.message}")
                last = exc
                if exc.retryable or exc.too_long:
                    self.metrics.fallbacks.labels(name, target.ref).inc()
                    continue
                raise
            attempts.served_by = call.trace.target = target.ref
            # closed here, not whenever it is collected: a caller that stops early (one result taken, a
            # client gone) ends the upstream call and gets the call logged and priced before it goes on
            async with contextlib.aclosing(self._committed(task, target, (stream, first, started), call)) as rest:
                async for chunk in rest:
                    yield chunk
            return
        if alias is None and last is not None:  # a remote name, no chain: its own failure (a 504 timeout, a 429)
            raise last
        raise ChainFailedError(f"no target of {name} could answer: " + "; ".join(errors or attempts.notes),
                               "try again later, or add another target to the alias")

    async def _first(self, task: Task, target: Target, request: Any, call: CallInfo,
                     attempts: Attempts) -> tuple[AsyncIterator[Any], Any, float]:
        """The target's stream and its first chunk with content, after the retries its rules allow."""
        retries, cooldown = self._rules(target)
        for attempt in range(retries.max + 1):
            attempts.count += 1
            call.trace.attempts = attempts.count
            started = time.perf_counter()
            stream = self._open(task, target, request, call)
            try:
                first = await self._prime(target, stream, call.trace)
            except CorralError as exc:
                await stream.aclose()  # type: ignore[attr-defined]
                failure = as_remote(exc)
                if target.provider is not None:  # a local target's dispatcher logged its own failure
                    self.dispatcher.record(target.ref, task, call, failure.http_status, Usage(), started, None,
                                           failure.message)
                if not (failure.retryable or failure.too_long):
                    raise failure from exc
                if self.health.failed(target.ref, cooldown):
                    self.metrics.cooldowns.labels(target.ref).inc()
                if failure.too_long or attempt == retries.max or self.health.cooling(target.ref):
                    raise failure from exc
                self.metrics.retries.labels(target.ref).inc()
                pause = self.backoff(retries, attempt, failure.retry_after)
                call.trace.waited_ms = (call.trace.waited_ms or 0.0) + pause * 1000
                await self.sleep(pause)
                continue
            self.health.succeeded(target.ref)
            return stream, first, started
        raise AssertionError("unreachable")  # pragma: no cover

    async def _prime(self, target: Target, stream: AsyncIterator[Any], trace: Trace) -> Any:
        """The first chunk that carries content (text, a result), within the target's first-token time."""
        limit = None if target.provider is None else self.settings.providers[target.provider].timeout.first_token
        try:
            async with asyncio.timeout(limit):
                while True:
                    chunk = await pull(stream, trace, target.provider is not None)
                    if getattr(chunk, "text", None) or not hasattr(chunk, "text") or chunk.usage is not None:
                        return chunk
        except TimeoutError:
            raise RemoteError(f"{target.ref} sent nothing within {limit:g} s", "try again later", status=504,
                              retryable=True) from None
        except StopAsyncIteration:
            raise RemoteError(f"{target.ref} answered nothing", status=502, retryable=True) from None

    def backoff(self, retries: Retries, attempt: int, retry_after: float | None) -> float:
        """Exponential back-off with full jitter in [1/2, 1] of the step, at least ``Retry-After``."""
        step = retries.backoff * (2.0 ** attempt) * (0.5 + self.random() / 2)
        return max(step, retry_after or 0.0)

    async def _committed(self, task: Task, target: Target, opened: tuple[AsyncIterator[Any], Any, float],
                         call: CallInfo) -> AsyncGenerator[Any, None]:
        """The rest of a stream its caller has started reading (``opened``: the stream, its first
        chunk, when the attempt began), within a remote target's total time; remote calls are logged
        here (local ones by the dispatcher)."""
        stream, first, started = opened
        tally = Tally(target.ref) if target.provider is not None else None
        total = None if target.provider is None else self.settings.providers[target.provider].timeout.total
        if tally is not None:
            tally.started = started  # its time to first token and total count from the attempt's start
        try:
            chunk = first
            while True:
                if tally is not None:
                    tally.see(chunk)
                yield chunk
                left = None if total is None else max(0.0, started + total - time.perf_counter())
                try:
                    async with asyncio.timeout(left):
                        chunk = await pull(stream, call.trace, target.provider is not None)
                except TimeoutError:
                    raise RemoteError(f"the answer took longer than its total time of {total:g} s", status=504,
                                      retryable=True) from None
        except StopAsyncIteration:
            pass
        except CorralError as exc:
            if tally is not None:
                tally.fail(exc)
            raise StreamBrokenError(f"{target.ref} failed mid-answer: {exc.message}",
                                    "the answer is incomplete; ask again") from exc
        except BaseException as exc:
            if tally is not None:
                tally.fail(exc)
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            if tally is not None:
                usage = tally.usage if TASKS[task].streams else getattr(first, "usage", Usage())
                self.dispatcher.record(target.ref, task, call, tally.status, usage, tally.started, tally.ttft,
                                       tally.error)


async def pull(stream: AsyncIterator[Any], trace: Trace, remote: bool) -> Any:
    """The stream's next chunk; for a remote target, the wait counts as the upstream's time (the
    x-corral-overhead-ms header is the rest)."""
    started = time.perf_counter()
    try:
        return await anext(stream)
    finally:
        if remote:
            trace.waited_ms = (trace.waited_ms or 0.0) + (time.perf_counter() - started) * 1000


def as_remote(exc: CorralError) -> RemoteError:
    """A local target's failure in the router's terms: no room or no slot is worth the next target."""
    if isinstance(exc, RemoteError):
        return exc
    retryable = isinstance(exc, (BusyError, InsufficientMemoryError, MissingDependencyError))
    failure = RemoteError(exc.message, exc.hint, status=exc.http_status, retryable=retryable,
                          too_long=isinstance(exc, ContextLengthError))
    return failure
