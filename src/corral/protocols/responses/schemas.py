"""Request bodies of the Responses API. Unknown fields are ignored; an input item or a tool of a
type corral does not serve (``web_search``, ``file_search``, ``reasoning`` items, ...) is a 400."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corral.protocols.upstream import NoUpstreamChoice


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputText(_Body):
    type: Literal["input_text", "output_text", "text"]
    text: str


class InputImage(_Body):
    type: Literal["input_image"]
    image_url: str = Field(min_length=1)  # a data: URL, or http(s) under the remote-media rules


Part = Annotated[InputText | InputImage, Field(discriminator="type")]


class MessageItem(_Body):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[Part]


class FunctionCallItem(_Body):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str = "{}"


class FunctionCallOutputItem(_Body):
    type: Literal["function_call_output"]
    call_id: str
    output: str


Item = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]


class FunctionTool(_Body):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Body):
    type: Literal["function"]
    name: str


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Body):
    format: TextFormat | None = None


class ResponsesBody(NoUpstreamChoice, _Body):
    model: str
    input: str | list[Item]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed_messages(cls, data: Any) -> Any:
        """Input messages may leave out ``"type": "message"`` (the SDK's easy input)."""
        if isinstance(data, dict) and isinstance(data.get("input"), list):
            items = [{**i, "type": "message"} if isinstance(i, dict) and "type" not in i and "role" in i else i
                     for i in data["input"]]
            return {**data, "input": items}
        return data
