"""The handler contract every engine implements, and the table of engines.

A handler declares the tasks it serves (``tasks``) and implements one method per task:
``chat`` / ``complete`` stream :class:`TextChunk` objects; ``embed`` returns an EmbedResult.
Engines are synchronous: the CLI calls them directly; the server runs them off the event loop.
Closing a streaming iterator early stops generation (this is how cancellation reaches them).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from corral.errors import MissingDependencyError, UnsupportedTaskError
from corral.models.info import MemoryEstimate, ModelInfo
from corral.models.safety import Trust
from corral.tasks import ChatRequest, CompletionRequest, EmbedRequest, EmbedResult, Task, TextChunk

# engine name -> "module:Class"; importing corral never imports an engine's libraries.
ENGINES: dict[str, str] = {
    "llama_cpp": "corral.engines.llama_cpp:LlamaCppHandler",
    "transformers": "corral.engines.transformers_lm:TransformersLMHandler",
    "sentence_transformers": "corral.engines.sentence_tf:SentenceTransformersHandler",
}


@dataclass(frozen=True)
class LoadOptions:
    device: str | None = None  # "cpu", "cuda", "cuda:1", "mps"; None = best available
    trust: Trust = field(default_factory=Trust)
    context_length: int | None = None
    threads: int | None = None
    parallel: int = 1  # sequences a batching engine decodes together (the server raises it)


class Handler:
    """Base class: lifecycle plus the declared tasks. Subclasses implement the task methods."""

    engine: ClassVar[str]
    tasks: ClassVar[frozenset[Task]] = frozenset()
    requires: ClassVar[tuple[str, ...]] = ()  # import names checked before load
    extra: ClassVar[str] = ""  # the pip extra that installs them
    max_concurrency: int = 1  # generation requests served at once (batched engines raise it)

    def __init__(self, path: Path, info: ModelInfo, options: LoadOptions) -> None:
        self.path, self.info, self.options = path, info, options

    def serves(self) -> frozenset[Task]:
        """Tasks this loaded model can serve: the engine's tasks the model supports."""
        return frozenset(t for t in self.tasks if t.value in self.info.tasks)

    @classmethod
    def import_libraries(cls) -> None:
        """Import the engine's libraries, so that a memory measurement of load() counts the model only."""
        for mod in cls.requires:
            importlib.import_module(mod)

    def load(self) -> None:
        raise NotImplementedError

    def unload(self) -> None:
        """Drop references to the model; subclasses free engine resources."""

    def memory_estimate(self) -> MemoryEstimate | None:
        return self.info.memory

    def chat(self, request: ChatRequest) -> Iterator[TextChunk]:
        raise UnsupportedTaskError(f"{self.engine} cannot chat")

    def complete(self, request: CompletionRequest) -> Iterator[TextChunk]:
        raise UnsupportedTaskError(f"{self.engine} cannot complete text")

    def embed(self, request: EmbedRequest) -> EmbedResult:
        raise UnsupportedTaskError(f"{self.engine} cannot embed")


def handler_class(engine: str) -> type[Handler]:
    target = ENGINES.get(engine)
    if target is None:
        raise UnsupportedTaskError(
            f"corral has no runnable engine {engine!r} yet",
            "`corral inspect` still describes the model; running it lands in a later release")
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Handler] = getattr(module, cls_name)
    for mod in cls.requires:
        if importlib.util.find_spec(mod) is None:
            raise MissingDependencyError(
                f"the {engine} engine needs the Python package {mod!r}, which is not installed",
                f"install it with: pip install 'corral[{cls.extra}]'")
    return cls
