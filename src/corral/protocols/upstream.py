"""Where a request goes is the operator's choice, never the client's: fields that proxies such as
LiteLLM read from a request body to pick the upstream, its API version or its credentials
(``api_base``, ``base_url``, ``api_key``, ...) are refused with a 400 naming the field on every
generation route, rather than ignored silently (a client that sends one expects it to matter).
The fields are declared only to be refused; they are left out of the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema

UPSTREAM_FIELDS = ("api_base", "base_url", "api_key", "api_version", "custom_llm_provider", "azure_endpoint",
                   "azure_ad_token")


def _refused() -> Any:
    return Field(default=None, exclude=True)


class NoUpstreamChoice(BaseModel):
    """A request body that may not choose its upstream (mixed into each API's top-level bodies)."""

    api_base: SkipJsonSchema[Any] = _refused()
    base_url: SkipJsonSchema[Any] = _refused()
    api_key: SkipJsonSchema[Any] = _refused()
    api_version: SkipJsonSchema[Any] = _refused()
    custom_llm_provider: SkipJsonSchema[Any] = _refused()
    azure_endpoint: SkipJsonSchema[Any] = _refused()
    azure_ad_token: SkipJsonSchema[Any] = _refused()

    @field_validator(*UPSTREAM_FIELDS, mode="before")
    @classmethod
    def _refuse(cls, value: Any, info: ValidationInfo) -> Any:
        raise ValueError(f"{info.field_name} cannot be set in a request: corral takes upstreams and their keys "
                         "from the server's configuration only (providers in its config file); leave it out")
