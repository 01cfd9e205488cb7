"""The Messages API over corral's OpenAI chat run: the body becomes a ``ChatCompletionBody`` (so
tools, images and sampling behave as on every door), the answer a ``message`` object, and a stream
the Messages events: ``message_start``, per block ``content_block_start`` / ``content_block_delta``
(``text_delta``, ``input_json_delta``) / ``content_block_stop``, ``message_delta`` (stop reason and
usage, input tokens included: they are known once the prompt has been read), ``message_stop``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from corral.protocols.anthropic.schemas import (
    CountTokensBody,
    ImageBlock,
    Message,
    MessagesBody,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from corral.protocols.convert import converted
from corral.protocols.openai.schemas import ChatCompletionBody
from corral.toolcalls import arguments_object

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _image(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    url = source.url if source.type == "url" else f"data:{source.media_type or 'image/*'};base64,{source.data or ''}"
    return {"type": "image_url", "image_url": {"url": url or ""}}


def _user(message: Message) -> list[dict[str, Any]]:
    """A user turn: its tool results as OpenAI tool messages, then its text and images."""
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = [{"role": "tool", "tool_call_id": b.tool_use_id,
                                  "content": ("error: " if b.is_error else "") + b.text()}
                                 for b in message.content if isinstance(b, ToolResultBlock)]
    parts = [{"type": "text", "text": b.text} if isinstance(b, TextBlock) else _image(b)
             for b in message.content if isinstance(b, TextBlock | ImageBlock)]
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    calls = [{"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(b.input)}}
             for b in message.content if isinstance(b, ToolUseBlock)]
    return {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}


def _tool_choice(body: CountTokensBody) -> Any:
    choice = body.tool_choice
    if choice is None or not body.tools:
        return None
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name or ""}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def chat_body(body: CountTokensBody, *, max_tokens: int, stream: bool = True) -> ChatCompletionBody:
    """The Messages body as the OpenAI chat corral runs."""
    system = body.system if isinstance(body.system, str) else "".join(b.text for b in body.system or [])
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for m in body.messages:
        messages.extend(_user(m) if m.role == "user" else [_assistant(m)])
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                               "parameters": t.input_schema}} for t in body.tools or []]
    fields: dict[str, Any] = {"model": body.model, "messages": messages, "max_tokens": max_tokens,
                              "tools": tools or None, "tool_choice": _tool_choice(body), "stream": stream,
                              "stream_options": {"include_usage": True} if stream else None}
    if isinstance(body, MessagesBody):
        given = body.model_fields_set  # only what the client set: a preset's defaults fill the rest
        fields.update({k: v for k, v in (("temperature", body.temperature), ("top_p", body.top_p),
                                         ("top_k", body.top_k), ("stop", body.stop_sequences or None))
                       if (k if k != "stop" else "stop_sequences") in given and v is not None})
        shape = body.output_config.format if body.output_config else None
        if shape is not None:
            fields["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "output", "schema": shape.schema_}}
    return converted(ChatCompletionBody, fields)


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call["function"]
    return {"type": "tool_use", "id": "toolu_" + call["id"].removeprefix("call_"), "name": function["name"],
            "input": arguments_object(function["arguments"])}


def message(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """A ``message`` object from a whole ``chat.completion``."""
    choice = answer["choices"][0]
    content: list[dict[str, Any]] = []
    if choice["message"].get("content"):
        content.append({"type": "text", "text": choice["message"]["content"]})
    content.extend(_tool_use(c) for c in choice["message"].get("tool_calls") or ())
    usage = answer["usage"]
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": STOP_REASONS.get(choice["finish_reason"], "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}}


class _Blocks:
    """The open content block of a stream and the index of the next."""

    def __init__(self) -> None:
        self.index, self.open = 0, False

    def start(self, block: dict[str, Any]) -> dict[str, Any]:
        self.open = True
        return {"type": "content_block_start", "index": self.index, "content_block": block}

    def stop(self) -> list[dict[str, Any]]:
        if not self.open:
            return []
        self.open = False
        self.index += 1
        return [{"type": "content_block_stop", "index": self.index - 1}]


async def events(chunks: AsyncIterator[dict[str, Any]], model: str) -> AsyncIterator[dict[str, Any]]:
    """The Messages stream's events from a chat run's OpenAI chunks (asked with usage)."""
    yield {"type": "message_start", "message": {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}
    blocks, reason, usage = _Blocks(), "end_turn", {"prompt_tokens": 0, "completion_tokens": 0}
    async for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if delta.get("content"):
                if not blocks.open:
                    yield blocks.start({"type": "text", "text": ""})
                yield {"type": "content_block_delta", "index": blocks.index,
                       "delta": {"type": "text_delta", "text": delta["content"]}}
            for call in delta.get("tool_calls") or ():
                for event in blocks.stop():
                    yield event
                use = _tool_use(call)
                yield blocks.start({**use, "input": {}})
                yield {"type": "content_block_delta", "index": blocks.index,
                       "delta": {"type": "input_json_delta", "partial_json": json.dumps(use["input"])}}
                for event in blocks.stop():
                    yield event
            if choice.get("finish_reason"):
                reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
    for event in blocks.stop():
        yield event
    yield {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
           "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}}
    yield {"type": "message_stop"}
