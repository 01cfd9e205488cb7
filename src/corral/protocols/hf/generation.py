"""Translation and summarisation in the Hugging Face Inference API's shapes
(``[{"translation_text": ...}]``, ``[{"summary_text": ...}]``): ``inputs`` a string or a list of
them, ``parameters`` ``src_lang`` / ``tgt_lang`` and ``generate_parameters`` (``max_new_tokens``,
``do_sample``, ``temperature``, ``top_p``, ``seed``); greedy unless sampling is asked for.

Every generation task of the HF shapes (these two and image-to-text) starts as a
:class:`GenerationRun`: one generation per input, read once, either whole (:meth:`~GenerationRun.response`,
the HF answer) or as chunk dicts (:meth:`~GenerationRun.chunks`, for a door that streams: the sidecar)
that a :class:`GenerationFold` folds back into the same answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.protocols.hf.text import texts
from corral.tasks import Sampling, SummarizeRequest, Task, TextChunk, TranslateRequest, Usage
from corral.wire import acollect, usage_json

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

DEFAULT_MAX_NEW_TOKENS = 256


def sampling_of(parameters: dict[str, Any]) -> Sampling:
    given = parameters.get("generate_parameters") or {}
    if not isinstance(given, dict):
        raise UsageError("parameters.generate_parameters must be an object")
    try:
        sampled = bool(given.get("do_sample")) or given.get("temperature") not in (None, 0, 0.0)
        sampling = Sampling(max_tokens=int(given.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS),
                            temperature=float(given.get("temperature") or 1.0) if sampled else 0.0,
                            top_p=float(given.get("top_p") or 1.0), seed=given.get("seed"))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"parameters.generate_parameters: {exc}") from None
    return sampling.check(lambda field: f"parameters.generate_parameters.{field}")


@dataclass
class GenerationRun:
    """The generations of one request, one per input, not started yet; ``shape`` turns their texts
    into the task's answer. Read it once: :meth:`response` runs them concurrently (they batch as
    separate requests would); :meth:`chunks` streams them one after the other in its caller's task,
    so a cancelled caller has already stopped them (:meth:`settle` has nothing to wait for)."""

    streams: list[AsyncIterator[TextChunk]]
    shape: Callable[[list[str]], Any]

    async def response(self) -> Any:
        done = await asyncio.gather(*(acollect(s) for s in self.streams))
        return self.shape([d.text for d in done])

    async def chunks(self) -> AsyncGenerator[dict[str, Any], None]:
        """``{"index", "text", "finish_reason"}`` per piece of input ``index``'s text; its last chunk
        has the finish reason and ``usage``."""
        try:
            for index, stream in enumerate(self.streams):
                async for c in stream:
                    if not (c.text or c.finish_reason):
                        continue
                    piece: dict[str, Any] = {"index": index, "text": c.text, "finish_reason": c.finish_reason}
                    if c.finish_reason:
                        piece["usage"] = usage_json(c.usage or Usage())
                    yield piece
        finally:
            for stream in self.streams:
                await stream.aclose()  # type: ignore[attr-defined]

    async def settle(self) -> None:
        """Nothing to wait for: :meth:`chunks` runs the generations in its caller's task."""

    def fold(self) -> GenerationFold:
        return GenerationFold(self.shape, [[] for _ in self.streams])


@dataclass
class GenerationFold:
    """:meth:`GenerationRun.chunks` folded back into the answer :meth:`GenerationRun.response` gives."""

    shape: Callable[[list[str]], Any]
    parts: list[list[str]] = field(default_factory=list)

    def add(self, chunk: dict[str, Any]) -> None:
        self.parts[chunk["index"]].append(chunk["text"])

    def result(self) -> Any:
        return self.shape(["".join(p) for p in self.parts])


def start_translation(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                      call: CallInfo) -> GenerationRun:
    items, _ = texts(inputs)
    sampling = sampling_of(parameters)
    requests = [TranslateRequest(t, parameters.get("src_lang"), parameters.get("tgt_lang"), sampling=sampling)
                for t in items]
    return GenerationRun([runtime.run(Task.TRANSLATE, model, r, call) for r in requests],
                         lambda done: [{"translation_text": t} for t in done])


def start_summarization(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                        call: CallInfo) -> GenerationRun:
    items, _ = texts(inputs)
    sampling = sampling_of(parameters)
    return GenerationRun([runtime.run(Task.SUMMARIZE, model, SummarizeRequest(t, sampling=sampling), call)
                          for t in items], lambda done: [{"summary_text": t} for t in done])


async def translation(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                      call: CallInfo) -> list[dict[str, str]]:
    result: list[dict[str, str]] = await start_translation(runtime, model, inputs, parameters, call).response()
    return result


async def summarization(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                        call: CallInfo) -> list[dict[str, str]]:
    result: list[dict[str, str]] = await start_summarization(runtime, model, inputs, parameters, call).response()
    return result
