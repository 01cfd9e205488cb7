"""A body one API's door builds from another's (Anthropic's Messages, Ollama's chat and generate, the
Responses API and the Hugging Face task payload, each turned into the body corral runs): validated like
a body the client sent, so a request that translates into an invalid one (no message left, a field out
of range) is the client's 400 naming the field, never a pydantic error reaching the server as a 500."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from corral.errors import ParameterError

M = TypeVar("M", bound=BaseModel)


def converted(model: type[M], fields: dict[str, Any]) -> M:
    """``model`` from ``fields``; a field that breaks its rules is a ParameterError (400) naming it."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ParameterError(where, f"invalid parameter {where}: {first.get('msg', 'invalid value')}") from None
