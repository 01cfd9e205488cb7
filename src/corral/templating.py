"""The one place chat templates are rendered: Jinja2's immutable sandbox.

Templates come from model files (GGUF metadata, tokenizer_config.json), i.e. from strangers, so
they never see a mutable object or an attribute the sandbox does not allow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from corral.errors import CorralError
from corral.tasks import Message


class ChatTemplateError(CorralError):
    http_status = 422


def _raise(message: str) -> NoReturn:
    raise ChatTemplateError(f"the model's chat template rejected the conversation: {message}")


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, autoescape=False)
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
    try:
        return str(compiled.render(
            messages=[{"role": m.role, "content": _content(m, as_parts)} for m in messages],
            add_generation_prompt=add_generation_prompt, bos_token=bos_token, eos_token=eos_token,
            **extra,
        ))
    except SecurityError as exc:
        raise ChatTemplateError(f"the model's chat template tried an unsafe operation: {exc}") from None
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template failed: {exc}") from None
