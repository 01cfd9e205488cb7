"""The handler contract every engine implements.

A handler implements the tasks the engine table (:mod:`corral.engines.table`) maps to it, each
as the method its :data:`~corral.tasks.TASKS` spec names: ``chat`` / ``complete`` stream
:class:`TextChunk` objects; ``embed`` returns an EmbedResult. There are no stubs: a test checks
that every task the table declares has its method. Engines are synchronous: the CLI calls them
directly; the server runs them off the event loop. Closing a streaming iterator early stops
generation (this is how cancellation reaches them).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from corral.engines.table import ENGINES, EngineSpec
from corral.errors import MissingDependencyError, UnsupportedTaskError
from corral.models.info import MemoryEstimate, ModelInfo
from corral.models.safety import Trust
from corral.tasks import TASKS, Task


@dataclass(frozen=True)
class LoadOptions:
    device: str | None = None  # "cpu", "cuda", "cuda:1", "mps"; None = best available
    trust: Trust = field(default_factory=Trust)
    context_length: int | None = None
    threads: int | None = None
    parallel: int = 1  # sequences a batching engine decodes together (the server raises it)
    dtype: str | None = None  # weights' compute type, one of the engine's `dtypes`; None: its default


class Handler:
    """Base class: lifecycle. Subclasses add the methods of the tasks the table maps to them."""

    engine: ClassVar[str]
    max_concurrency: int = 1  # generation requests served at once (batched engines raise it)

    def __init__(self, path: Path, info: ModelInfo, options: LoadOptions, *,
                 spec: EngineSpec | None = None) -> None:
        self.path, self.info, self.options = path, info, options
        self.engine_spec = spec or self.spec()  # the table row it was chosen by (the loader passes it)

    @classmethod
    def spec(cls) -> EngineSpec:
        """The engine's row in the built-in table."""
        return ENGINES[cls.engine]

    def serves(self) -> frozenset[Task]:
        """Tasks this loaded model can serve: the model's tasks its table row maps to this handler."""
        target = f"{type(self).__module__}:{type(self).__qualname__}"
        return self.engine_spec.served_by(target, self.info.tasks)

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        """Import the engine's libraries, so that a memory measurement of load() counts the model only."""
        for mod in (spec or cls.spec()).imports:
            importlib.import_module(mod)

    def load(self) -> None:
        raise NotImplementedError

    def unload(self) -> None:
        """Drop references to the model; subclasses free engine resources."""

    def memory_estimate(self) -> MemoryEstimate | None:
        return self.info.memory


def implementation(handler: Handler, task: Task) -> Callable[[Any], Any]:
    """The handler's method for ``task`` (the caller has checked that the handler serves it)."""
    method: Callable[[Any], Any] = getattr(handler, TASKS[task].method)
    return method


def handler_class(engine: str, tasks: Sequence[str] = (),
                  engines: Mapping[str, EngineSpec] = ENGINES) -> type[Handler]:
    """The handler class of ``engine`` in the table ``engines`` for the first of ``tasks`` it
    implements (that of its first task, if none given); its libraries must be installed."""
    spec = engines.get(engine)
    target = None if spec is None else spec.handler_for(list(tasks) or [t.value for t in spec.handlers][:1])
    if spec is None or target is None:
        wanted = ", ".join(tasks) or "anything"
        raise UnsupportedTaskError(
            f"corral cannot run {engine} models for {wanted} yet",
            "`corral inspect` still describes the model; running it lands in a later release")
    for mod in spec.imports:
        if importlib.util.find_spec(mod) is None:
            raise MissingDependencyError(
                f"the {engine} engine needs the Python package {mod!r}, which is not installed",
                f"install it with: pip install 'corral[{spec.extra}]'")
    module_name, _, cls_name = target.partition(":")
    cls: type[Handler] = getattr(importlib.import_module(module_name), cls_name)
    return cls
