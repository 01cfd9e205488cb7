"""Translation and summarisation in the Hugging Face Inference API's shapes
(``[{"translation_text": ...}]``, ``[{"summary_text": ...}]``): ``inputs`` a string or a list of
them, ``parameters`` ``src_lang`` / ``tgt_lang`` and ``generate_parameters`` (``max_new_tokens``,
``do_sample``, ``temperature``, ``top_p``, ``seed``); greedy unless sampling is asked for."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.protocols.hf.text import texts
from corral.tasks import Sampling, SummarizeRequest, Task, TranslateRequest
from corral.wire import acollect

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


async def _run_all(runtime: Runtime, model: str, task: Task, requests: list[Any], call: CallInfo) -> list[str]:
    done = await asyncio.gather(*(acollect(runtime.run(task, model, r, call)) for r in requests))
    return [d.text for d in done]


async def translation(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                      call: CallInfo) -> list[dict[str, str]]:
    items, _ = texts(inputs)
    sampling = sampling_of(parameters)
    requests = [TranslateRequest(t, parameters.get("src_lang"), parameters.get("tgt_lang"), sampling=sampling)
                for t in items]
    return [{"translation_text": t} for t in await _run_all(runtime, model, Task.TRANSLATE, requests, call)]


async def summarization(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                        call: CallInfo) -> list[dict[str, str]]:
    items, _ = texts(inputs)
    sampling = sampling_of(parameters)
    requests = [SummarizeRequest(t, sampling=sampling) for t in items]
    return [{"summary_text": t} for t in await _run_all(runtime, model, Task.SUMMARIZE, requests, call)]
