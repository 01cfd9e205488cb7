"""Function calling for models that know nothing of it: describe the tools in a system message,
constrain the output to a JSON shape where a call is required, and parse calls out of text.

The output format is one JSON object: {"tool_calls": [{"name": ..., "arguments": {...}}]}.
Parsing also accepts the <tool_call>{...}</tool_call> form that tool-trained templates emit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from corral.wire import loads

_TAGGED = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it


def tools_prompt(tools: list[dict[str, Any]], choice: str | None) -> str:
    listing = "\n".join(json.dumps({"name": t["name"], "description": t.get("description") or "",
                                    "parameters": t.get("parameters") or {}}) for t in tools)
    if choice and choice not in ("auto", "required"):
        rule = f"You must call the function {choice}."
    elif choice == "required":
        rule = "You must call one or more of these functions."
    else:
        rule = "Call a function only when it helps answer; otherwise answer normally in plain text."
    return ("You can call these functions:\n" + listing + "\n" + rule + "\n"
            'To call functions, reply with only this JSON and nothing else: '
            '{"tool_calls": [{"name": "<function name>", "arguments": {<arguments>}}]}')


def calls_schema(tools: list[dict[str, Any]], choice: str | None) -> dict[str, Any]:
    """A JSON schema that only admits calls of the allowed functions with valid arguments."""
    allowed = [t for t in tools if choice in (None, "auto", "required") or t["name"] == choice]
    options = [{"type": "object",
                "properties": {"name": {"const": t["name"]},
                               "arguments": t.get("parameters") or {"type": "object"}},
                "required": ["name", "arguments"]} for t in allowed]
    item = options[0] if len(options) == 1 else {"anyOf": options}
    return {"type": "object",
            "properties": {"tool_calls": {"type": "array", "items": item, "minItems": 1}},
            "required": ["tool_calls"]}


def _as_call(obj: Any, names: set[str]) -> ParsedCall | None:
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(obj["name"], json.dumps(args))


def parse_calls(text: str, names: set[str]) -> list[ParsedCall] | None:
    """The calls in a model's answer, or None when the answer is plain text."""
    tagged = _TAGGED.findall(text)
    candidates: list[Any] = []
    if tagged:
        for raw in tagged:
            try:
                candidates.append(loads(raw))
            except json.JSONDecodeError:
                return None
    else:
        stripped = text.strip()
        if not stripped.startswith(("{", "[")):
            return None
        try:
            obj = loads(stripped)
        except json.JSONDecodeError:
            return None
        candidates = obj.get("tool_calls", [obj]) if isinstance(obj, dict) else obj
        if not isinstance(candidates, list):
            return None
    calls = [_as_call(c, names) for c in candidates]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def maybe_call(prefix: str) -> bool:
    """Could an answer that starts like this still be a tool call? (streaming holds it back)"""
    head = prefix.lstrip()
    return not head or head[0] in "{[" or "<tool_call>".startswith(head[:11]) or head.startswith("<tool_call>")


def arguments_object(text: str) -> Any:
    """A call's JSON arguments (OpenAI sends them as a string) as the object the Ollama and Anthropic
    APIs carry; text that is not JSON is kept as ``{"value": text}``."""
    try:
        return loads(text or "{}")
    except json.JSONDecodeError:
        return {"value": text}
