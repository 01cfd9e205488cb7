"""Request bodies of Ollama's routes. Unknown fields are ignored (as Ollama does); a field of the
wrong type is a 400 in Ollama's error shape. No field names a path, a host or a credential."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corral.protocols.upstream import NoUpstreamChoice


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(_Body):
    """The ``options`` Ollama clients send; the ones corral maps, the rest accepted and ignored."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = None
    num_predict: int | None = None  # -1: until the context ends; -2: fill the context
    stop: list[str] | None = None
    num_ctx: int | None = Field(default=None, ge=1)  # prompt + output tokens, within the load's context (--ctx)


class FunctionCall(_Body):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Body):
    function: FunctionCall


class Message(_Body):
    role: str = Field(pattern="^(system|user|assistant|tool)$")
    content: str = ""
    images: list[str] | None = None  # base64, no data: prefix
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class _Named(_Body):
    """Ollama's clients send ``model``; older ones ``name``."""

    model: str = ""

    @model_validator(mode="before")
    @classmethod
    def _name_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model") and isinstance(data.get("name"), str):
            return {**data, "model": data["name"]}
        return data


class _Generating(NoUpstreamChoice, _Named):
    format: str | dict[str, Any] | None = None  # "json" or a JSON schema
    options: Options | None = None
    stream: bool = True
    keep_alive: float | str | None = None  # seconds, or a duration ("5m"); 0 unloads after the request
    think: bool | str | None = None  # accepted: corral's models do not think aloud


class ChatBody(_Generating):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateBody(_Generating):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    images: list[str] | None = None
    raw: bool = False
    template: str | None = None  # accepted and ignored: the model's own template applies
    context: list[int] | None = None  # accepted and ignored (deprecated in Ollama)


class EmbedBody(NoUpstreamChoice, _Named):
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1)
    options: Options | None = None
    keep_alive: float | str | None = None


class EmbeddingsBody(NoUpstreamChoice, _Named):
    prompt: str
    options: Options | None = None
    keep_alive: float | str | None = None


class ModelBody(_Named):
    """``/api/show``, ``/api/delete``."""

    verbose: bool = False


class PullBody(_Named):
    insecure: bool = False
    stream: bool = True


class CopyBody(_Body):
    source: str
    destination: str
