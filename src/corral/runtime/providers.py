"""The providers a runtime has: one client per configured provider, built on first use (so a
provider whose key is unset fails only the calls that need it) and closed with the runtime."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from corral.engines.remote.base import Provider, RemoteError
from corral.engines.remote.presets import ANTHROPIC, LITELLM, OLLAMA, OPENAI, PRESETS
from corral.errors import MissingDependencyError
from corral.targets import ProviderSettings


class ProviderPool:
    def __init__(self, providers: Mapping[str, ProviderSettings]) -> None:
        self.settings = dict(providers)
        self.built: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        if name not in self.built:
            self.built[name] = build_provider(name, self.settings[name])
        return self.built[name]

    async def aclose(self) -> None:
        for provider in self.built.values():
            await provider.aclose()
        self.built.clear()


def build_provider(name: str, settings: ProviderSettings) -> Provider:
    preset = PRESETS[settings.type]
    library = {OPENAI: "openai", ANTHROPIC: "anthropic", LITELLM: "litellm"}.get(preset.api)
    if library is not None and importlib.util.find_spec(library) is None:
        extra = "litellm" if library == "litellm" else "remote"
        raise MissingDependencyError(f"provider {name} ({settings.type}) needs the {library} package",
                                     f"pip install 'corral[{extra}]'")
    if preset.api == LITELLM:  # LiteLLM knows where each of its providers is: a base_url is optional
        from corral.engines.remote.litellm_provider import LiteLLMProvider

        return LiteLLMProvider(name, settings, settings.base_url)
    base_url = settings.base_url or preset.base_url
    if base_url is None:
        raise RemoteError(f"provider {name} ({settings.type}) has no base_url", "set base_url in its config table",
                          status=503)
    if preset.api == OPENAI:
        from corral.engines.remote.openai_compat import OpenAICompatible

        return OpenAICompatible(name, settings, base_url)
    if preset.api == ANTHROPIC:
        from corral.engines.remote.anthropic import AnthropicProvider

        return AnthropicProvider(name, settings, base_url)
    if preset.api == OLLAMA:
        from corral.engines.remote.ollama import OllamaProvider

        return OllamaProvider(name, settings, base_url)
    raise RemoteError(f"provider {name}: corral does not speak to {settings.type} providers",
                      "use type openai, anthropic, ollama or litellm", status=503)
