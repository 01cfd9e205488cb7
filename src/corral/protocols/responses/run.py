"""The Responses API over corral's OpenAI chat run: the body becomes a ``ChatCompletionBody``
(instructions a system message, input items messages, function calls and their outputs the tool
turns), the answer a ``response`` object (a ``message`` item with ``output_text``, ``function_call``
items), and a stream the Responses events, each with its ``sequence_number``: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` ... ``.done``, ``response.function_call_arguments.delta`` / ``.done``,
``response.output_item.done``, then ``response.completed`` (``response.incomplete`` when the token
limit cut it; ``response.failed`` when the model failed mid-way)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from corral.errors import CorralError
from corral.protocols.convert import converted
from corral.protocols.openai.schemas import ChatCompletionBody
from corral.protocols.responses.schemas import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputImage,
    MessageItem,
    NamedFunction,
    ResponsesBody,
)


def _new(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message(item: MessageItem) -> dict[str, Any]:
    role = "system" if item.role == "developer" else item.role
    if isinstance(item.content, str):
        return {"role": role, "content": item.content}
    if role == "assistant" or not any(isinstance(p, InputImage) for p in item.content):
        return {"role": role, "content": "".join(p.text for p in item.content if not isinstance(p, InputImage))}
    return {"role": role, "content": [{"type": "image_url", "image_url": {"url": p.image_url}}
                                      if isinstance(p, InputImage) else {"type": "text", "text": p.text}
                                      for p in item.content]}


def conversation(body: ResponsesBody, previous: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The conversation as chat messages, without the instructions: a stored earlier one
    (``previous``), then this request's input."""
    out: list[dict[str, Any]] = list(previous or [])
    if isinstance(body.input, str):
        return [*out, {"role": "user", "content": body.input}]
    for item in body.input:
        if isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
                out[-1]["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        else:
            out.append(_message(item))
    return out


def chat_body(body: ResponsesBody, messages: list[dict[str, Any]]) -> ChatCompletionBody:
    """The Responses body as the OpenAI chat corral runs, over ``messages`` (:func:`conversation`);
    the instructions come first (an earlier response's instructions are not carried over)."""
    if body.instructions:
        messages = [{"role": "system", "content": body.instructions}, *messages]
    choice: Any = body.tool_choice
    if isinstance(choice, NamedFunction):
        choice = {"type": "function", "function": {"name": choice.name}}
    fmt = body.text.format if body.text else None
    response_format: dict[str, Any] | None = None
    if fmt is not None and fmt.type == "json_object":
        response_format = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        response_format = {"type": "json_schema", "json_schema": {"name": fmt.name, "schema": fmt.schema_ or {}}}
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                               **({"parameters": t.parameters} if t.parameters else {})}}
             for t in body.tools or []]
    sampling: dict[str, Any] = {k: getattr(body, k) for k in ("temperature", "top_p") if k in body.model_fields_set}
    return converted(ChatCompletionBody, {
        "model": body.model, "messages": messages, "max_tokens": body.max_output_tokens, **sampling,
        "tools": tools or None, "tool_choice": choice if tools else None, "response_format": response_format,
        "stream": True, "stream_options": {"include_usage": True}})


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


def turn_of(output: list[dict[str, Any]]) -> dict[str, Any]:
    """A response's output items as the assistant turn of the conversation."""
    text = "".join(p["text"] for item in output if item["type"] == "message" for p in item["content"])
    calls = [{"id": i["call_id"], "type": "function", "function": {"name": i["name"], "arguments": i["arguments"]}}
             for i in output if i["type"] == "function_call"]
    return {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}


def skeleton(body: ResponsesBody, response_id: str, stored: bool = False) -> dict[str, Any]:
    """The ``response`` object before any output: what the request asked for, status in progress."""
    fmt = body.text.format.model_dump(by_alias=True, exclude_none=True) if body.text and body.text.format else \
        {"type": "text"}
    choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedFunction) else body.tool_choice
    return {"id": response_id, "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "model": body.model, "output": [], "error": None, "incomplete_details": None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature, "top_p": body.top_p, "parallel_tool_calls": True,
            "tool_choice": choice or "auto", "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "text": {"format": fmt}, "previous_response_id": body.previous_response_id, "store": stored,
            "metadata": body.metadata or {},
            "usage": None}


def _text_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text or
            status == "completed" else []}


def _call_item(call: dict[str, Any], status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": _new("fc"), "call_id": call["id"], "name": call["function"]["name"],
            "arguments": call["function"]["arguments"] if status == "completed" else "", "status": status}


def finished(response: dict[str, Any], output: list[dict[str, Any]], reason: str | None,
             usage: dict[str, int]) -> dict[str, Any]:
    cut = reason == "length"
    return {**response, "status": "incomplete" if cut else "completed", "output": output,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "usage": _usage(usage["prompt_tokens"], usage["completion_tokens"])}


def response(body: ResponsesBody, answer: dict[str, Any], stored: bool = False) -> dict[str, Any]:
    """A whole ``response`` from a whole ``chat.completion``."""
    choice = answer["choices"][0]
    output: list[dict[str, Any]] = []
    if choice["message"].get("content"):
        output.append(_text_item(_new("msg"), choice["message"]["content"], "completed"))
    output.extend(_call_item(c, "completed") for c in choice["message"].get("tool_calls") or ())
    return finished(skeleton(body, _new("resp"), stored), output, choice["finish_reason"], answer["usage"])


async def events(body: ResponsesBody, chunks: AsyncIterator[dict[str, Any]],
                 stored: bool = False) -> AsyncIterator[dict[str, Any]]:
    """The Responses stream's events from a chat run's OpenAI chunks (asked with usage)."""
    stream = _Stream(skeleton(body, _new("resp"), stored))
    yield stream.event("response.created", response=stream.response)
    yield stream.event("response.in_progress", response=stream.response)
    reason, usage = None, {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        async for chunk in chunks:
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                delta = choice["delta"]
                for event in stream.text(delta.get("content") or ""):
                    yield event
                for call in delta.get("tool_calls") or ():
                    for event in stream.call(call):
                        yield event
                reason = choice.get("finish_reason") or reason
    except CorralError as exc:
        failed = {**stream.response, "status": "failed", "output": stream.output,
                  "error": {"code": "server_error", "message": exc.message}}
        yield stream.event("response.failed", response=failed)
        return
    for event in stream.close_text():
        yield event
    done = finished(stream.response, stream.output, reason, usage)
    yield stream.event("response.incomplete" if done["status"] == "incomplete" else "response.completed",
                       response=done)


class _Stream:
    """The state of one streamed response: its items so far and the event counter."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.output: list[dict[str, Any]] = []
        self.sequence = 0
        self.text_id: str | None = None
        self.text_so_far = ""

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}

    def text(self, piece: str) -> list[dict[str, Any]]:
        if not piece:
            return []
        out = []
        if self.text_id is None:
            self.text_id = _new("msg")
            out.append(self.event("response.output_item.added", output_index=len(self.output),
                                  item=_text_item(self.text_id, "", "in_progress")))
            out.append(self.event("response.content_part.added", item_id=self.text_id, output_index=len(self.output),
                                  content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        self.text_so_far += piece
        out.append(self.event("response.output_text.delta", item_id=self.text_id, output_index=len(self.output),
                              content_index=0, delta=piece, logprobs=[]))
        return out

    def close_text(self) -> list[dict[str, Any]]:
        if self.text_id is None:
            return []
        index, item_id, text = len(self.output), self.text_id, self.text_so_far
        item = _text_item(item_id, text, "completed")
        self.output.append(item)
        self.text_id = None
        return [self.event("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
                           text=text, logprobs=[]),
                self.event("response.content_part.done", item_id=item_id, output_index=index, content_index=0,
                           part=item["content"][0]),
                self.event("response.output_item.done", output_index=index, item=item)]

    def call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        out = self.close_text()
        item = _call_item(call, "completed")
        index = len(self.output)
        out.append(self.event("response.output_item.added", output_index=index,
                              item={**item, "arguments": "", "status": "in_progress"}))
        out.append(self.event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                              delta=item["arguments"]))
        out.append(self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                              arguments=item["arguments"], name=item["name"]))
        self.output.append(item)
        out.append(self.event("response.output_item.done", output_index=index, item=item))
        return out
