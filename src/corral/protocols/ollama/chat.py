"""Ollama's ``/api/chat`` and ``/api/generate`` over corral's OpenAI chat run: the body becomes a
``ChatCompletionBody`` (so tools, JSON output, images and sampling behave as on every door), the
run's chunks become Ollama's NDJSON chunks, and the final chunk carries the token counts and the
durations Ollama reports, in nanoseconds, measured here: load (from the call's trace), prompt
(request start to the first token, less the load) and generation (first token to the end)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from corral.errors import UsageError
from corral.protocols.convert import converted
from corral.protocols.ollama.schemas import ChatBody, GenerateBody, Message, Options
from corral.protocols.openai.schemas import ChatCompletionBody, CompletionBody
from corral.task_types import UNBOUNDED
from corral.toolcalls import arguments_object

B = TypeVar("B", ChatCompletionBody, CompletionBody)
UNTIL_CONTEXT_ENDS = (-1, -2)  # num_predict values that mean "no limit": the engine caps by the context


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _sampling(options: Options | None) -> dict[str, Any]:
    """Ollama's options as OpenAI chat fields (Ollama's own defaults where the client gives none)."""
    o = options or Options()
    fields: dict[str, Any] = {"temperature": 0.8 if o.temperature is None else o.temperature,
                              "top_p": 0.9 if o.top_p is None else o.top_p, "seed": o.seed, "top_k": o.top_k,
                              "context_limit": o.num_ctx}
    if o.num_predict is not None and o.num_predict not in UNTIL_CONTEXT_ENDS:
        if o.num_predict < 1:
            raise UsageError("options.num_predict must be at least 1, or -1 (until the context ends)")
        fields["max_tokens"] = o.num_predict
    if o.stop:
        if len(o.stop) > 4:
            raise UsageError("options.stop may hold at most 4 sequences")
        fields["stop"] = o.stop
    return fields


def _format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise UsageError(f"format must be \"json\" or a JSON schema object, not {fmt!r}"[:200])


def _images(images: list[str] | None) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": f"data:image/*;base64,{b64}"}} for b64 in images or ()]


def _message(m: Message, index: int) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "content": m.content, "tool_call_id": m.tool_name or f"call_{index}"}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.images:
        out["content"] = [{"type": "text", "text": m.content}, *_images(m.images)]
    if m.role == "assistant" and m.tool_calls:
        out["tool_calls"] = [{"id": f"call_{index}_{k}", "type": "function",
                              "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments)}}
                             for k, c in enumerate(m.tool_calls)]
    return out


def _defaulted(body: B, options: Options | None) -> B:
    """``body``, noting the sampling fields that hold Ollama's defaults rather than the client's."""
    o = options or Options()
    body._door_defaults = frozenset(f for f, v in (("temperature", o.temperature), ("top_p", o.top_p)) if v is None)
    return body


def chat_body(body: ChatBody, model: str) -> ChatCompletionBody:
    """``/api/chat``'s body as the OpenAI chat corral runs (``model``: corral's name for it)."""
    return _defaulted(converted(ChatCompletionBody, {
        "model": model, "messages": [_message(m, i) for i, m in enumerate(body.messages)],
        "tools": body.tools or None, "response_format": _format(body.format), "stream": True,
        "stream_options": {"include_usage": True}, **_sampling(body.options)}), body.options)


def generate_body(body: GenerateBody, model: str) -> ChatCompletionBody:
    """``/api/generate`` (not raw) as a one-turn chat: Ollama applies the model's template to the prompt."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": body.system}] if body.system else []
    user: Any = body.prompt if not body.images else [{"type": "text", "text": body.prompt}, *_images(body.images)]
    messages.append({"role": "user", "content": user})
    return _defaulted(converted(ChatCompletionBody, {
        "model": model, "messages": messages, "response_format": _format(body.format), "stream": True,
        "stream_options": {"include_usage": True}, **_sampling(body.options)}), body.options)


def completion_body(body: GenerateBody, model: str) -> CompletionBody:
    """``/api/generate`` with ``raw``: the prompt as it is, no template (OpenAI's completions)."""
    fields = _sampling(body.options)
    fields.setdefault("max_tokens", UNBOUNDED)  # no num_predict: the engine caps by the context left
    return _defaulted(converted(CompletionBody, {"model": model, "prompt": body.prompt, "stream": True, **fields}),
                      body.options)


async def completion_deltas(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Completion chunks (``choices[].text``) in the chat chunks' shape (``choices[].delta.content``)."""
    async for chunk in chunks:
        yield {**chunk, "choices": [{"index": c["index"], "delta": {"content": c["text"]},
                                     "finish_reason": c["finish_reason"]} for c in chunk["choices"]]}


def nanoseconds(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


@dataclass
class Timing:
    """When the request began and its first token came; the final chunk's counts and durations."""

    started: float = field(default_factory=time.perf_counter)
    first: float | None = None

    def token(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def totals(self, prompt_tokens: int, completion_tokens: int, load_ms: float | None) -> dict[str, int]:
        end = time.perf_counter()
        first = self.first or end
        load = (load_ms or 0.0) / 1000
        return {"total_duration": nanoseconds(end - self.started), "load_duration": nanoseconds(load),
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": nanoseconds(first - self.started - load),
                "eval_count": completion_tokens, "eval_duration": nanoseconds(end - first)}


def _call(tool_call: dict[str, Any]) -> dict[str, Any]:
    function = tool_call["function"]
    return {"function": {"name": function["name"], "arguments": arguments_object(function["arguments"])}}


async def ollama_chunks(openai_chunks: AsyncIterator[dict[str, Any]], model: str, timing: Timing,
                        load_ms: Any, *, key: str) -> AsyncIterator[dict[str, Any]]:
    """Ollama's chunks from a chat run's OpenAI chunks (asked with usage). ``key``: ``message``
    (``/api/chat``: ``{"role", "content"}`` objects) or ``response`` (``/api/generate``: text);
    ``load_ms``: a callable giving the call's load time once known."""
    reason, usage = "stop", {"prompt_tokens": 0, "completion_tokens": 0}
    async for chunk in openai_chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            calls = [_call(c) for c in delta.get("tool_calls") or ()]
            if delta.get("content") or calls:
                timing.token()
                yield {"model": model, "created_at": now_iso(), **_piece(key, delta.get("content") or "", calls),
                       "done": False}
            if choice.get("finish_reason"):
                reason = "length" if choice["finish_reason"] == "length" else "stop"
    yield {"model": model, "created_at": now_iso(), **_piece(key, "", []), "done": True, "done_reason": reason,
           **timing.totals(usage["prompt_tokens"], usage["completion_tokens"], load_ms())}


def _piece(key: str, text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    if key == "response":
        return {"response": text}
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return {"message": message}


def fold(chunks: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """A whole answer (``"stream": false``) from the chunks: texts joined, tool calls gathered, the
    final chunk's counts and durations."""
    final = dict(chunks[-1])
    text = "".join(c["response"] if key == "response" else c["message"]["content"] for c in chunks)
    if key == "response":
        final["response"] = text
    else:
        calls = [call for c in chunks for call in c["message"].get("tool_calls", ())]
        final["message"] = {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}
    return final
