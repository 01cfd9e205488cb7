"""A fake engine for fast in-process tests of the runtime and the HTTP door.

It is a real :class:`~corral.engines.base.Handler` reached through a real engine-table row
(:data:`FAKE_SPEC`): a test builds its runtime with ``engines=FAKE_ENGINES`` and registers a model
in a real :class:`~corral.models.store.Store` with :func:`register_fake`. Nothing of corral's is
mocked or patched; only the weights are fake.

- The model "file" is a small JSON file (:class:`FakeConfig`) the handler reads on load.
- Loading really allocates the model's memory estimate (and unloading frees it), so the memory
  the registry measures after a load is the estimate the test chose: a budget drives eviction.
- ``chat`` / ``complete`` echo the words of the last message / the prompt, one word a token,
  through corral's own stop handling (:func:`~corral.engines.streaming.stream_with_stops`);
  ``max_tokens`` and ``stop`` behave as on a real engine. With ``repeat`` the words cycle until
  ``max_tokens`` (or the context) runs out.
- ``embed`` returns deterministic vectors (from a hash of the text; unit length when asked).
- With ``hold`` every token after the first waits for :attr:`FakeHandler.release` (a
  ``threading.Event`` the test sets), so a test can keep a request in flight for as long as it
  needs, without sleeping. ``delay`` adds a per-token pause for tests that need a long stream. ``noisy`` writes to fd 1
  on every token (a ``print`` and a raw ``os.write``), as a chatty native library would. ``fail_after``
  raises RuntimeError once that many tokens are out.
- ``fail_load`` makes loading run out of memory after the weights were allocated: ``"raise"`` raises
  MemoryError, ``"allocate"`` asks for 1 PiB (more than any address space: the allocation itself
  fails at once, nothing touched), ``"cuda"`` raises torch's ``OutOfMemoryError`` (a RuntimeError,
  as a CUDA load that runs out raises it; torch imported only then).
- Every generation is recorded (:class:`FakeGeneration`): tokens produced, whether it ended or
  was closed early; :meth:`FakeHandler.wait_until` lets a test wait for a state, with a timeout.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corral.engines.base import Handler
from corral.engines.streaming import stream_with_stops, tokens_to_generate
from corral.engines.table import ENGINES, EngineSpec
from corral.models.info import MemoryEstimate, ModelInfo
from corral.models.store import Entry, Store
from corral.runtime.runtime import Runtime
from corral.tasks import ChatRequest, CompletionRequest, EmbedRequest, EmbedResult, Generation, Task, TextChunk, Usage

FAKE = "tests.fake_engine:FakeHandler"
FAKE_SPEC = EngineSpec("fake", packages=(), imports=(), extra="", formats=frozenset({"fake"}),
                       handlers={Task.CHAT: FAKE, Task.COMPLETE: FAKE, Task.EMBED: FAKE})
FAKE_ENGINES: dict[str, EngineSpec] = {**ENGINES, FAKE_SPEC.name: FAKE_SPEC}
MiB = 1 << 20


@dataclass(frozen=True)
class FakeConfig:
    """What a fake model file says about the model."""

    dim: int = 8  # embedding width
    parallel: int = 1  # requests served at once (the handler's max_concurrency)
    context: int = 4096  # tokens (words) of prompt plus reply
    hold: bool = False  # tokens after the first wait for FakeHandler.release
    delay: float = 0.0  # seconds per token
    repeat: bool = False  # cycle the words until max_tokens or the context runs out
    noisy: bool = False  # every token also print()s and os.write()s to fd 1, as chatty native libraries do
    fail_after: int | None = None  # raise RuntimeError after this many tokens, as a crashing engine would
    fail_load: str | None = None  # load fails: "raise" (MemoryError), "allocate" (a real failed allocation), "cuda"


@dataclass
class FakeGeneration:
    """One chat or completion the handler served."""

    prompt_tokens: int
    request: Any = None  # the ChatRequest / CompletionRequest as the engine got it
    produced: int = 0
    waiting: bool = False  # blocked on FakeHandler.release right now
    ended: bool = False  # produced every token it meant to
    closed: bool = False  # its consumer closed it first (a stop sequence, a client gone)


class FakeHandler(Handler):
    """The fake engine's handler: chat, complete and embed, deterministic, in-process."""

    engine = "fake"

    def load(self) -> None:
        self.config = FakeConfig(**json.loads(self.path.read_text()))
        self.max_concurrency = self.config.parallel
        size = self.info.memory.cpu_bytes if self.info.memory else 0
        self.weights = b"\x5a" * size  # written, so resident: the registry measures it
        if self.config.fail_load is not None:
            run_out_of_memory(self.config.fail_load)
        self.release = threading.Event()
        if not self.config.hold:
            self.release.set()
        self.generations: list[FakeGeneration] = []
        self.embed_calls: list[int] = []  # texts per engine call
        self.unloaded = False
        self._changed = threading.Condition()

    def unload(self) -> None:
        self.weights = b""
        self.unloaded = True
        self.release.set()  # a held generation ends instead of blocking the unload's caller

    # --- tasks --------------------------------------------------------------------------------

    def chat(self, request: ChatRequest) -> Iterator[TextChunk]:
        prompt = sum(len(m.content.split()) for m in request.messages)
        return self._generate(request.messages[-1].content.split(), prompt, request)

    def complete(self, request: CompletionRequest) -> Iterator[TextChunk]:
        words = request.prompt.split()
        return self._generate(words, len(words), request)

    def embed(self, request: EmbedRequest) -> EmbedResult:
        self.embed_calls.append(len(request.inputs))
        vectors = [fake_vector(text, self.config.dim, request.normalize) for text in request.inputs]
        tokens = [len(text.split()) for text in request.inputs]
        return EmbedResult(vectors, Usage(prompt_tokens=sum(tokens)), tokens)

    # --- generation ---------------------------------------------------------------------------

    def _generate(self, words: list[str], prompt_tokens: int, request: Generation) -> Iterator[TextChunk]:
        sampling = request.sampling
        room = tokens_to_generate(prompt_tokens, self.config.context, sampling.max_tokens)
        limit = room if self.config.repeat and words else min(room, len(words))
        record = FakeGeneration(prompt_tokens, request)
        self._note(lambda: self.generations.append(record))
        counted = [0]
        return stream_with_stops(self._words(words, limit, record, counted), sampling.stop, prompt_tokens,
                                 sampling.max_tokens, counted)

    def _words(self, words: list[str], limit: int, record: FakeGeneration, counted: list[int]) -> Iterator[str]:
        try:
            for i in range(limit):
                if i and not self.release.is_set():
                    self._note(functools.partial(setattr, record, "waiting", True))
                    self.release.wait()
                    self._note(functools.partial(setattr, record, "waiting", False))
                if self.config.delay:
                    time.sleep(self.config.delay)
                if self.config.fail_after is not None and i >= self.config.fail_after:
                    raise RuntimeError(f"the fake engine failed after {i} tokens")
                if self.config.noisy:
                    print(f"noise from the engine, token {i}", flush=True)
                    os.write(1, b'{"partial": "raw write without a newline')
                counted[0] = i + 1
                self._note(functools.partial(setattr, record, "produced", i + 1))
                yield words[i % len(words)] if i == 0 else " " + words[i % len(words)]
            self._note(lambda: setattr(record, "ended", True))
        except GeneratorExit:
            self._note(lambda: setattr(record, "closed", True))
            raise

    def _note(self, change: Callable[[], object]) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate`` holds (checked whenever a generation changes), or the timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)


def run_out_of_memory(how: str) -> None:
    """Fail a load the way ``how`` says (:attr:`FakeConfig.fail_load`)."""
    if how == "allocate":
        bytearray(1 << 50)  # 1 PiB: past the address space, refused by the allocator before any page is touched
    if how == "cuda":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    raise MemoryError(f"the fake engine ran out of memory ({how})")


def fake_vector(text: str, dim: int, normalize: bool = True) -> list[float]:
    """The fake model's embedding of ``text``: hash bytes mapped to [-1, 1]."""
    raw = b"".join(hashlib.sha256(f"{k}:{text}".encode()).digest() for k in range(dim // 32 + 1))
    vector = [(b - 127.5) / 127.5 for b in raw[:dim]]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector] if normalize else vector


@dataclass
class FakeModel:
    """What :func:`register_fake` wrote: the manifest entry and the config in its file."""

    entry: Entry
    config: FakeConfig = field(default_factory=FakeConfig)


def register_fake(store: Store, folder: Path, name: str, *, tasks: tuple[str, ...] = ("chat", "complete"),
                  memory_bytes: int = MiB, **config: object) -> FakeModel:
    """Register a fake model ``name`` in ``store``: its file (the JSON config) goes in ``folder``;
    ``memory_bytes`` is its memory estimate, which loading it really takes."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeConfig(**config)  # type: ignore[arg-type]
    path = folder / f"{name}.fake.json"
    path.write_text(json.dumps(asdict(fake)))
    info = ModelInfo(path=str(path), format="fake", architecture="Echo", model_type="fake", tasks=list(tasks),
                     engine=FAKE_SPEC.name, parameters=0, context_length=fake.context,
                     size_bytes=path.stat().st_size, memory=MemoryEstimate(memory_bytes, memory_bytes, fake.context),
                     chat_template="chat" in tasks, sources=[path.name], name_hint=name)
    return FakeModel(store.put(name, str(path), "path", path, False, info), fake)


def loaded_fake(runtime: Runtime, name: str) -> FakeHandler:
    """The handler of the loaded fake model ``name``."""
    handler = runtime.registry.models[name].handler
    assert isinstance(handler, FakeHandler), type(handler)
    return handler
