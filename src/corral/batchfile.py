"""The JSONL files of `corral batch`, pure: an input line becomes a request (or the reason it cannot),
a finished call becomes an output line, and an output file already there says which ids are done.

An input line is a JSON object with one of ``messages`` (a chat: ``[{"role", "content"}, ...]``),
``prompt`` (one user message for a chat model, the text itself for a completion model; ``system``
may go with it) or ``input`` (a string or a list of strings to embed); an optional ``id`` (a string
or an integer; else the line number is the id); and per-line options: ``temperature``, ``top_p``,
``max_tokens``, ``seed``, ``stop``. Any other field is refused, so a typo is never silently ignored.
An output line carries ``id``, ``line``, ``model``, ``target``, the answer (``text`` and
``finish_reason``, or ``embeddings``), ``usage``, ``cost_usd`` and ``error`` (null, or what went
wrong and what to do)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import CorralError
from corral.tasks import DEFAULT_SAMPLING, ChatRequest, CompletionRequest, EmbedRequest, Message, Sampling, Task
from corral.wire import loads

OPTIONS = ("temperature", "top_p", "max_tokens", "seed", "stop")
SHAPES = ("messages", "prompt", "input")
ROLES = ("system", "user", "assistant")
MAX_LINE = 16 << 20  # one input line: a long document is fine, a runaway file is not


class LineError(ValueError):
    """Why one input line cannot run."""


@dataclass(frozen=True)
class Item:
    """One input line: its id, its number, and the task and request it asks for (or the error)."""

    id: str | int
    line: int
    task: Task | None = None
    request: Any = None
    error: str | None = None


def read_items(path: Path, chats: bool) -> Iterator[Item]:
    """Every non-blank line of ``path`` as an Item; ``chats``: a prompt line is a chat (else a completion).
    An id that repeats an earlier line's is an error on the later line."""
    seen: dict[str | int, int] = {}
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            item = parse_line(raw, number, chats)
            if item.id in seen:
                item = Item(item.id, number,
                            error=f"id {item.id!r} repeats line {seen[item.id]}: give each line its own id")
            else:
                seen[item.id] = number
            yield item


def parse_line(raw: bytes, number: int, chats: bool) -> Item:
    """One input line as an Item: its request, or the reason it cannot run."""
    try:
        if len(raw) > MAX_LINE:
            raise LineError(f"the line is {len(raw)} bytes; at most {MAX_LINE} are read")
        try:
            data = loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LineError(f"not JSON ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(data, dict):
            raise LineError(f"a line must be a JSON object, not {type(data).__name__}")
        key = _id(data, number)
        try:
            task, request = _request(data, chats)
        except LineError as exc:
            return Item(key, number, error=str(exc))
        return Item(key, number, task, request)
    except LineError as exc:
        return Item(number, number, error=str(exc))


def _id(data: dict[str, Any], number: int) -> str | int:
    key = data.get("id", number)
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise LineError("id must be a string or an integer")
    return key


def _request(data: dict[str, Any], chats: bool) -> tuple[Task, Any]:
    shapes = [s for s in SHAPES if s in data]
    if len(shapes) != 1:
        raise LineError("give exactly one of messages (a chat), prompt (a text) or input (to embed)"
                        + (f"; this line has {', '.join(shapes)}" if shapes else ""))
    unknown = sorted(set(data) - {"id", "system", *SHAPES, *OPTIONS})
    if unknown:
        raise LineError(f"unknown field(s) {', '.join(unknown)}: a line takes id, {', '.join(SHAPES)}, system, "
                        + ", ".join(OPTIONS))
    shape = shapes[0]
    if shape == "input":
        return Task.EMBED, EmbedRequest(_inputs(data["input"]))
    sampling = _sampling(data)
    if shape == "messages":
        if "system" in data:
            raise LineError("system goes with prompt; in messages, give a system message")
        return Task.CHAT, ChatRequest(_messages(data["messages"]), sampling=sampling)
    prompt, system = data["prompt"], data.get("system")
    if not isinstance(prompt, str) or not prompt:
        raise LineError("prompt must be a non-empty string")
    if system is not None and not isinstance(system, str):
        raise LineError("system must be a string")
    if not chats:
        if system:
            raise LineError("system needs a chat model; this one completes text")
        return Task.COMPLETE, CompletionRequest(prompt, sampling=sampling)
    messages = (Message("system", system), Message("user", prompt)) if system else (Message("user", prompt),)
    return Task.CHAT, ChatRequest(messages, sampling=sampling)


def _inputs(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise LineError("input must be a string or a non-empty list of strings")
    return tuple(items)


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise LineError("messages must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise LineError(f"messages[{i}] must be {{\"role\": one of {', '.join(ROLES)}, \"content\": a string}}")
        out.append(Message(m["role"], m["content"]))
    if out[-1].role == "assistant":
        raise LineError("the last message is the assistant's: end with the user's turn")
    return tuple(out)


def _sampling(data: dict[str, Any]) -> Sampling:
    d = DEFAULT_SAMPLING
    stop = data.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise LineError("stop must be a string or a list of strings")
    values = {"temperature": data.get("temperature", d.temperature), "top_p": data.get("top_p", d.top_p),
              "max_tokens": data.get("max_tokens", d.max_tokens), "seed": data.get("seed")}
    for name, integer in (("temperature", False), ("top_p", False), ("max_tokens", True), ("seed", True)):
        value = values[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int if integer else (int, float))):
            raise LineError(f"{name} must be an integer" if integer else f"{name} must be a number")
    try:
        given = frozenset(f for f in ("temperature", "top_p", "max_tokens", "seed", "stop") if f in data)
        return Sampling(max_tokens=values["max_tokens"], temperature=float(values["temperature"]),
                        top_p=float(values["top_p"]), seed=values["seed"], stop=tuple(stop), given=given).check(str)
    except CorralError as exc:
        raise LineError(exc.message) from None


def error_json(message: str, hint: str | None = None, status: int | None = None) -> dict[str, Any]:
    return {"message": message, "hint": hint, "status": status}


def done_ids(path: Path) -> tuple[dict[str | int, bytes], bool]:
    """The answered lines of an earlier run, by id, and whether the file needs rewriting to keep only
    them (a line with an error, to be redone; a last line cut short by a kill)."""
    answered: dict[str | int, bytes] = {}
    rewrite = False
    if not path.is_file():  # a new file, or a device (/dev/stdout): nothing to resume
        return answered, rewrite
    with path.open("rb") as f:
        for raw in f:
            try:
                row = loads(raw) if raw.endswith(b"\n") else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                row = None
            if not isinstance(row, dict) or "id" not in row or row.get("error") is not None:
                rewrite = True
                continue
            answered[row["id"]] = raw
    return answered, rewrite
