"""The one place chat templates are rendered: Jinja2's immutable sandbox, bounded.

Templates come from model files (GGUF metadata, tokenizer_config.json), i.e. from strangers, so
they never see a mutable object or an attribute the sandbox does not allow, and their work is
bounded: ``range`` hands out at most :data:`MAX_STEPS` numbers per rendering (all calls together, so
nested loops cannot multiply), ``*`` cannot build a value past :data:`MAX_OUTPUT` items nor ``**``
a number past :data:`MAX_BITS` bits, and a rendering stops once its output passes
:data:`MAX_OUTPUT`. Each of these is a :class:`ChatTemplateError` (422), like a template that does
not parse: chat is refused, the rest of the model serves.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from corral.errors import CorralError
from corral.tasks import Message


class ChatTemplateError(CorralError):
    http_status = 422


MAX_STEPS = 100_000  # numbers range() may produce in one rendering
MAX_OUTPUT = 4_000_000  # characters of a rendered prompt, or of a string or list a template builds
MAX_BITS = 1_000_000  # the size of a number ** may compute
_steps: contextvars.ContextVar[list[int]] = contextvars.ContextVar("template_steps")


def _range(*args: int) -> Iterator[int]:
    numbers = range(*args)
    spent = _steps.get()
    spent[0] += len(numbers)
    if spent[0] > MAX_STEPS:
        raise ChatTemplateError(f"the model's chat template loops too long (more than {MAX_STEPS} steps)")
    return iter(numbers)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``*`` and ``**`` checked before they run."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if (operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0
                and abs(left).bit_length() * right > MAX_BITS):
            raise ChatTemplateError(f"the model's chat template computes a number of more than {MAX_BITS} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_OUTPUT:
                    raise ChatTemplateError(f"the model's chat template builds a value of more than {MAX_OUTPUT} items")
        return super().call_binop(context, operator, left, right)


def _raise(message: str) -> NoReturn:
    raise ChatTemplateError(f"the model's chat template rejected the conversation: {message}")


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    env = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.globals["range"] = _range
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template does not parse: {exc}") from None


def _content(message: Message, as_parts: bool) -> Any:
    """A message's content for a template: text, or (``as_parts``: the templates of image-text
    models) a list of ``{"type": "text", "text": ...}`` and ``{"type": "image"}`` items in order."""
    if not as_parts:
        return message.content
    return [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image"}
            for p in message.parts or (message.content,)]


def render_chat(template: str, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "", as_parts: bool = False, **extra: Any) -> str:
    compiled = _compile(template)
    token = _steps.set([0])
    try:
        pieces, size = [], 0
        for piece in compiled.generate(
                messages=[{"role": m.role, "content": _content(m, as_parts)} for m in messages],
                add_generation_prompt=add_generation_prompt, bos_token=bos_token, eos_token=eos_token, **extra):
            size += len(piece)
            if size > MAX_OUTPUT:
                raise ChatTemplateError(f"the model's chat template writes more than {MAX_OUTPUT} characters")
            pieces.append(piece)
        return "".join(pieces)
    except SecurityError as exc:
        raise ChatTemplateError(f"the model's chat template tried an unsafe operation: {exc}") from None
    except (TemplateError, OverflowError, RecursionError, TypeError, ValueError) as exc:
        raise ChatTemplateError(f"the model's chat template failed: {type(exc).__name__}: {exc}") from None
    finally:
        _steps.reset(token)
