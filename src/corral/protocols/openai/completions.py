"""OpenAI text completions in corral's terms, for every door: prompts (one or a list, ``n`` each)
run as completion tasks; text choices back, or ``text_completion`` chunks for a stream, which
:class:`CompletionFold` folds back into one response."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.protocols.openai.schemas import CompletionBody, given_fields, stop_tuple
from corral.task_types import UNBOUNDED
from corral.tasks import CompletionRequest, Sampling, Task, TextChunk, Usage
from corral.wire import acollect, primed, usage_json

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime


@dataclass
class CompletionRun:
    """Completions under way, the first one primed. Read it once: :meth:`response` or :meth:`chunks`."""

    jobs: list[AsyncIterator[TextChunk]]
    head: dict[str, Any]
    n: int

    async def response(self) -> dict[str, Any]:
        texts = await asyncio.gather(*(acollect(j) for j in self.jobs))
        usage = Usage(sum(t.usage.prompt_tokens for t in texts[:: self.n]),
                      sum(t.usage.completion_tokens for t in texts))
        choices = [{"index": i, "text": t.text, "logprobs": None, "finish_reason": t.finish_reason}
                   for i, t in enumerate(texts)]
        return {**self.head, "choices": choices, "usage": usage_json(usage)}

    async def settle(self) -> None:
        """Nothing to wait for: :meth:`chunks` runs the jobs in its caller's task, so a cancelled
        caller has already stopped them (ChatRun's counterpart waits for its per-choice tasks)."""

    async def chunks(self, include_usage: bool) -> AsyncGenerator[dict[str, Any], None]:
        total = Usage()
        try:
            for index, job in enumerate(self.jobs):
                async for chunk in job:
                    if chunk.text or chunk.finish_reason:
                        yield {**self.head, "choices": [{"index": index, "text": chunk.text, "logprobs": None,
                                                         "finish_reason": chunk.finish_reason}]}
                    if chunk.usage:
                        total = Usage(total.prompt_tokens + chunk.usage.prompt_tokens,
                                      total.completion_tokens + chunk.usage.completion_tokens)
            if include_usage:
                yield {**self.head, "choices": [], "usage": usage_json(total)}
        finally:
            for job in self.jobs:
                await job.aclose()  # type: ignore[attr-defined]


async def start_completion(runtime: Runtime, body: CompletionBody, call: CallInfo) -> CompletionRun:
    """Start every prompt's ``n`` completions; errors before generation are raised here."""
    if body.echo or body.suffix:
        raise UsageError("echo and suffix are not supported", "leave them out")
    if body.logprobs:
        raise UsageError("logprobs on completions is not supported yet", "use chat completions")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise UsageError("prompt must not be an empty list")
    jobs: list[AsyncIterator[TextChunk]] = []
    for prompt in prompts:
        for k in range(body.n):
            seed = None if body.seed is None else body.seed + k
            sampling = Sampling(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                                seed=seed, stop=stop_tuple(body.stop), top_k=body.top_k,
                                context=body.context_limit,
                                asked="max_tokens" in body.model_fields_set and body.max_tokens != UNBOUNDED,
                                given=given_fields(body))
            job = runtime.run(Task.COMPLETE, body.model, CompletionRequest(prompt, sampling=sampling),
                              replace(call, prompt=prompt))
            jobs.append(await primed(job) if not jobs else job)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": body.model}
    return CompletionRun(jobs, head, body.n)


class CompletionFold:
    """``text_completion`` chunks folded back into the response they stream."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str | None] = {}
        self.usage: dict[str, int] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        self.head = self.head or {k: chunk[k] for k in ("id", "object", "created", "model")}
        self.usage = chunk.get("usage") or self.usage
        for c in chunk["choices"]:
            self.texts.setdefault(c["index"], []).append(c["text"])
            self.finish[c["index"]] = c["finish_reason"] or self.finish.get(c["index"])

    def result(self) -> dict[str, Any]:
        choices = [{"index": i, "text": "".join(parts), "logprobs": None, "finish_reason": self.finish.get(i)}
                   for i, parts in sorted(self.texts.items())]
        return {**self.head, "choices": choices, "usage": self.usage}
