"""Request bodies of the OpenAI-compatible routes; fields shared by chat and completion declared once.

Bodies carry parameters only: no field can choose an upstream host, a file path or a credential
(one that would, as LiteLLM's proxy reads them, is refused: ``protocols.upstream``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from corral.protocols.upstream import NoUpstreamChoice


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown OpenAI fields are accepted and ignored


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImageUrl(_Body):
    url: str = Field(min_length=1)  # a data: URL, or http(s) when the server allows remote media
    detail: Literal["auto", "low", "high"] = "auto"


class ImageUrlPart(_Body):
    type: Literal["image_url"]
    image_url: ImageUrl

    @field_validator("image_url", mode="before")
    @classmethod
    def _url_alone(cls, value: Any) -> Any:  # some clients send the URL as a bare string
        return {"url": value} if isinstance(value, str) else value


ContentPart = Annotated[TextPart | ImageUrlPart, Field(discriminator="type")]


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if isinstance(p, TextPart))
        return self.content or ""

    def image_urls(self) -> list[str]:
        if not isinstance(self.content, list):
            return []
        return [p.image_url.url for p in self.content if isinstance(p, ImageUrlPart)]


class FunctionDef(_Body):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: dict[str, str]


class JSONSchemaFormat(_Body):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_Body):
    include_usage: bool = False


Stop = str | list[str] | None


def stop_tuple(stop: Stop) -> tuple[str, ...]:
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def _check_stop(value: Stop) -> Stop:
    if isinstance(value, list) and len(value) > 4:
        raise ValueError("at most 4 stop sequences")
    return value


class _GenerationBody(NoUpstreamChoice, _Body):
    """The fields chat and completion bodies share, declared once (OpenAI's defaults)."""

    model: str
    n: int = Field(default=1, ge=1, le=16)
    seed: int | None = None
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)  # not OpenAI's: vLLM's, Ollama's and Anthropic's
    context_limit: int | None = Field(default=None, ge=1)  # not OpenAI's: Ollama's num_ctx (prompt + output)
    user: str | None = None
    # fields another door's translation filled with that API's own defaults (Ollama's temperature 0.8):
    # not the client's values, so a preset's defaults take their place
    _door_defaults: frozenset[str] = PrivateAttr(default=frozenset())

    _stop = field_validator("stop")(classmethod(lambda cls, v: _check_stop(v)))


SAMPLING_NAMES = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed", "stop": "stop",
                  "max_tokens": "max_tokens", "max_completion_tokens": "max_tokens"}  # body field -> Sampling field


def given_fields(body: _GenerationBody) -> frozenset[str]:
    """The Sampling fields the client set (a null counts as not set): a preset fills the others."""
    return frozenset(SAMPLING_NAMES[f] for f in body.model_fields_set - body._door_defaults
                     if f in SAMPLING_NAMES and getattr(body, f) is not None)


class ChatCompletionBody(_GenerationBody):
    messages: list[ChatMessage] = Field(min_length=1)
    frequency_penalty: float | None = None
    logprobs: bool = False
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = None
    response_format: ResponseFormat | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: list[Tool] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionBody(_GenerationBody):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    max_tokens: int = Field(default=16, ge=1)
    suffix: str | None = None


class EmbeddingBody(NoUpstreamChoice, _Body):
    input: str | list[str | dict[str, Any]]  # items {"text": ...} / {"image": ...}: protocols.embed_inputs
    model: str
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
