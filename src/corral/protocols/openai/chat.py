"""OpenAI chat completions in corral's terms, for every door: messages, tools and response_format
become ChatRequests; n choices run through the runtime; engine chunks become OpenAI choices, or
``chat.completion.chunk`` objects for a stream (the HTTP door frames them as SSE, the sidecar as
notifications), and :class:`ChatFold` folds such chunks back into one ``chat.completion``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from corral.protocols.openai.schemas import (
    ChatCompletionBody,
    ChatMessage,
    ImageUrlPart,
    NamedToolChoice,
    given_fields,
    stop_tuple,
)
from corral.task_types import UNBOUNDED
from corral.tasks import ChatRequest, ImagePart, Message, Sampling, TextChunk, TokenLogprob, Usage
from corral.toolcalls import ParsedCall, calls_schema, maybe_call, parse_calls, tools_prompt
from corral.wire import acollect, loads, primed, usage_json

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo, Trace
    from corral.runtime.runtime import Runtime



MAX_IMAGES = 16  # images one conversation may carry


def _message(m: ChatMessage, images: Iterator[Any]) -> Message:
    if isinstance(m.content, list) and any(isinstance(p, ImageUrlPart) for p in m.content):
        parts = tuple(ImagePart(next(images)) if isinstance(p, ImageUrlPart) else p.text for p in m.content)
        return Message("system" if m.role == "developer" else m.role, m.text(), parts)
    if m.role == "assistant" and m.tool_calls:
        calls = [{"name": c.function.name, "arguments": _loads(c.function.arguments)} for c in m.tool_calls]
        return Message("assistant", json.dumps({"tool_calls": calls}))
    if m.role == "tool":
        return Message("user", f"Result of function call {m.tool_call_id or ''}: {m.text()}".replace("  ", " "))
    return Message("system" if m.role == "developer" else m.role, m.text())


def _loads(text: str) -> Any:
    try:
        return loads(text)
    except json.JSONDecodeError:
        return text


def _logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                         "top_logprobs": [{"token": a, "logprob": lp, "bytes": list(a.encode())} for a, lp in t.top]}
                        for t in items]}


@dataclass
class ChatResult:
    text: str
    usage: Usage
    finish_reason: str
    logprobs: list[TokenLogprob] | None
    calls: list[ParsedCall] | None

    def choice(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None if self.calls else self.text}
        if self.calls:
            message["tool_calls"] = [_call_json(c) for c in self.calls]
        return {"index": index, "message": message,
                "logprobs": _logprobs(self.logprobs) if self.logprobs is not None else None,
                "finish_reason": "tool_calls" if self.calls else self.finish_reason}


def _call_json(call: ParsedCall, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments}}
    return out if index is None else {"index": index, **out}


@dataclass
class PreparedChat:
    request: ChatRequest
    tool_names: set[str] = field(default_factory=set)
    want_logprobs: bool = False

    def request_for(self, i: int) -> ChatRequest:
        seed = self.request.sampling.seed
        return self.request if seed is None or i == 0 else \
            replace(self.request, sampling=replace(self.request.sampling, seed=seed + i))

    def _calls(self, text: str) -> list[ParsedCall] | None:
        return parse_calls(text, self.tool_names) if self.tool_names else None

    async def collect(self, stream: AsyncIterator[TextChunk]) -> ChatResult:
        got = await acollect(stream)
        return ChatResult(got.text, got.usage, got.finish_reason, got.logprobs if self.want_logprobs else None,
                          self._calls(got.text))

    async def stream_chunks(self, streams: list[AsyncIterator[TextChunk]], head: dict[str, Any],
                            include_usage: bool, pumps: list[asyncio.Task[None]] | None = None,
                            ) -> AsyncGenerator[dict[str, Any], None]:
        """``chat.completion.chunk`` objects: each choice's role, its content deltas (tool calls held
        back until they are known to be calls), its finish; then usage when asked. The tasks that
        run the streams are added to ``pumps``."""
        base = {**head, "object": "chat.completion.chunk"}

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None,
                  lps: list[TokenLogprob] | None = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta,
                      "logprobs": _logprobs(lps) if self.want_logprobs and lps is not None else None,
                      "finish_reason": finish}
            return {**base, "choices": [choice]}

        held = [""] * len(streams)
        holding = [bool(self.tool_names)] * len(streams)
        prompt_tokens, completion_tokens = 0, 0
        for i in range(len(streams)):
            yield chunk(i, {"role": "assistant", "content": ""})
        async for i, c in _merge(streams, [] if pumps is None else pumps):
            if c.text:
                if holding[i]:
                    held[i] += c.text
                    if not maybe_call(held[i]):
                        holding[i] = False
                        yield chunk(i, {"content": held[i]}, lps=list(c.logprobs))
                else:
                    yield chunk(i, {"content": c.text}, lps=list(c.logprobs))
            if c.finish_reason is None:
                continue
            usage = c.usage or Usage()
            prompt_tokens = usage.prompt_tokens
            completion_tokens += usage.completion_tokens
            calls = self._calls(held[i]) if holding[i] else None
            if calls:
                yield chunk(i, {"tool_calls": [_call_json(call, k) for k, call in enumerate(calls)]})
                yield chunk(i, {}, "tool_calls")
            else:
                if holding[i] and held[i]:
                    yield chunk(i, {"content": held[i]})
                yield chunk(i, {}, c.finish_reason)
        if include_usage:
            yield {**base, "choices": [], "usage": usage_json(Usage(prompt_tokens, completion_tokens))}


async def _merge(streams: list[AsyncIterator[TextChunk]],
                 tasks: list[asyncio.Task[None]]) -> AsyncIterator[tuple[int, TextChunk]]:
    """Chunks of several streams as they come, tagged with the stream's index; each stream is run
    by a task of its own, added to ``tasks``."""
    queue: asyncio.Queue[tuple[int, TextChunk | BaseException | None]] = asyncio.Queue()
    room = asyncio.Semaphore(16 * len(streams))  # a client that reads slowly holds the pumps, and they their engines

    async def pump(i: int, stream: AsyncIterator[TextChunk]) -> None:
        try:
            async for c in stream:
                await room.acquire()
                queue.put_nowait((i, c))
            queue.put_nowait((i, None))
        except BaseException as exc:
            queue.put_nowait((i, exc))
        finally:  # the pump closes its own stream: closing it from outside while the pump runs it fails
            await stream.aclose()  # type: ignore[attr-defined]

    tasks.extend(asyncio.create_task(pump(i, s)) for i, s in enumerate(streams))
    open_streams = len(streams)
    try:
        while open_streams:
            i, item = await queue.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                room.release()
                yield i, item
    finally:
        # no await here: a client that left cancels this task (and, under anyio, every await it makes
        # from now on); a cancelled pump's own task stops its generation and closes its stream
        for t in tasks:
            t.cancel()


async def load_images(body: ChatCompletionBody, runtime: Runtime) -> list[Any]:
    """The images of ``body``'s ``image_url`` parts, in order, decoded and checked (remote ones
    fetched only where the server allows it)."""
    from corral.remote_media import load_image

    urls = [url for m in body.messages for url in m.image_urls()]
    if len(urls) > MAX_IMAGES:
        from corral.errors import UsageError

        raise UsageError(f"a conversation may carry at most {MAX_IMAGES} images; this one has {len(urls)}")
    pixels = runtime.settings.runtime.max_image_pixels
    return list(await asyncio.gather(*(load_image(url, runtime.media, pixels) for url in urls)))


def prepare_chat(body: ChatCompletionBody, images: Sequence[Any] = ()) -> PreparedChat:
    """``body`` as corral's ChatRequest; ``images``: its image parts' images, in order."""
    given = iter(images)
    messages = [_message(m, given) for m in body.messages]
    tools = [t.function.model_dump() for t in body.tools or []] if body.tool_choice != "none" else []
    choice: str | None = body.tool_choice if isinstance(body.tool_choice, str) else None
    if isinstance(body.tool_choice, NamedToolChoice):
        choice = body.tool_choice.function.get("name")
        if not tools or choice not in {t["name"] for t in tools}:
            from corral.errors import UsageError

            raise UsageError(f"tool_choice names {choice!r}, which is not among the tools")
    schema: dict[str, Any] | None = None
    if body.response_format and body.response_format.type == "json_object":
        schema = {"type": "object"}
    elif body.response_format and body.response_format.type == "json_schema":
        schema = body.response_format.json_schema.schema_ if body.response_format.json_schema else {}
        schema = schema or {"type": "object"}
    names: set[str] = set()
    if tools:
        names = {t["name"] for t in tools}
        messages.insert(0, Message("system", tools_prompt(tools, choice)))
        if choice != "auto" and choice is not None:
            schema = calls_schema(tools, choice)
    max_tokens = body.max_completion_tokens or body.max_tokens or UNBOUNDED
    sampling = Sampling(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                        stop=stop_tuple(body.stop), top_k=body.top_k, context=body.context_limit,
                        asked=max_tokens != UNBOUNDED, given=given_fields(body))
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    request = ChatRequest(tuple(messages), sampling=sampling, json_schema=schema, logprobs=logprobs)
    return PreparedChat(request, names, body.logprobs)


@dataclass
class ChatRun:
    """A chat completion under way: ``n`` choices started, the first one primed (its errors are the
    request's). Read it once, as :meth:`response` or as :meth:`chunks`."""

    prepared: PreparedChat
    streams: list[AsyncIterator[TextChunk]]
    head: dict[str, Any]
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    trace: Trace | None = None  # who served the call and what it cost, once it has ended

    async def response(self) -> dict[str, Any]:
        results = await asyncio.gather(*(self.prepared.collect(s) for s in self.streams))
        usage = Usage(results[0].usage.prompt_tokens, sum(r.usage.completion_tokens for r in results))
        return {**self.head, "object": "chat.completion", "choices": [r.choice(i) for i, r in enumerate(results)],
                "usage": usage_json(usage)}

    async def chunks(self, include_usage: bool) -> AsyncGenerator[dict[str, Any], None]:
        """The stream's chunks; the usage chunk of a one-choice answer also carries ``x_corral``: the
        target that served it and its cost (known by then: every stream has ended), for clients that
        want them (the web UI) and ignored by the rest."""
        async with contextlib.aclosing(self.prepared.stream_chunks(self.streams, self.head, include_usage,
                                                                   self.pumps)) as chunks:
            async for chunk in chunks:
                trace = self.trace
                if "usage" in chunk and not chunk["choices"] and len(self.streams) == 1 and trace is not None:
                    chunk = {**chunk, "x_corral": {"target": trace.target, "cost_usd": trace.cost_usd,
                                                   "price_source": trace.price_source}}
                yield chunk

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait (``timeout`` seconds at most: an engine stuck in a native call must not hold up a
        shutdown) until every stream of a cancelled or closed run has stopped: engine stopped, slot
        freed, call logged. The HTTP door cannot wait there (its cancel scope would cancel the wait
        too) and leaves that to the tasks; the sidecar answers a cancel only after it."""
        if self.pumps:
            await asyncio.wait(self.pumps, timeout=timeout)


async def start_chat(runtime: Runtime, body: ChatCompletionBody, call: CallInfo) -> ChatRun:
    """Start ``body``'s choices through ``runtime``; errors before generation (unknown model, full
    queue, a task the model lacks) are raised here."""
    from corral.tasks import Task

    prepared = prepare_chat(body, await load_images(body, runtime))
    call = replace(call, prompt="\n".join(f"{m.role}: {m.content}" for m in prepared.request.messages))
    # only the first choice is primed: its errors are every choice's errors, and priming the others
    # would hold a model slot that the first one needs to finish
    streams = [runtime.run(Task.CHAT, body.model, prepared.request_for(i), call) for i in range(body.n)]
    streams[0] = await primed(streams[0])
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model,
            "system_fingerprint": "corral"}
    return ChatRun(prepared, streams, head, trace=call.trace)


class ChatFold:
    """``chat.completion.chunk`` objects folded back into the ``chat.completion`` they stream."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, int] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        self.head = self.head or {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint")}
        self.usage = chunk.get("usage") or self.usage
        for c in chunk["choices"]:
            got = self.choices.setdefault(c["index"], {"text": [], "calls": [], "finish": None, "logprobs": None})
            delta = c["delta"]
            if delta.get("content"):
                got["text"].append(delta["content"])
            got["calls"].extend({k: v for k, v in call.items() if k != "index"} for call in delta.get("tool_calls", ()))
            if c.get("logprobs") is not None:
                got["logprobs"] = (got["logprobs"] or []) + c["logprobs"]["content"]
            got["finish"] = c["finish_reason"] or got["finish"]

    def result(self) -> dict[str, Any]:
        choices = []
        for index, got in sorted(self.choices.items()):
            message: dict[str, Any] = {"role": "assistant", "content": None if got["calls"] else "".join(got["text"])}
            if got["calls"]:
                message["tool_calls"] = got["calls"]
            logprobs = None if got["logprobs"] is None else {"content": got["logprobs"]}
            choices.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": got["finish"]})
        return {**self.head, "object": "chat.completion", "choices": choices, "usage": self.usage}
