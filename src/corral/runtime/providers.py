"""The providers a runtime has: one client per configured provider, built on first use (so a
provider whose key is unset fails only the calls that need it) and closed with the runtime."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from corral.engines.remote.base import Provider
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


# wire format -> (module, class, the package it imports, the extra that installs it)
CLASSES: dict[str, tuple[str, str, str, str]] = {
    OPENAI: ("corral.engines.remote.openai_compat", "OpenAICompatible", "httpx", "remote"),
    ANTHROPIC: ("corral.engines.remote.anthropic", "AnthropicProvider", "anthropic", "remote"),
    OLLAMA: ("corral.engines.remote.ollama", "OllamaProvider", "httpx", "remote"),
    LITELLM: ("corral.engines.remote.litellm_provider", "LiteLLMProvider", "litellm", "litellm"),
}


def build_provider(name: str, settings: ProviderSettings) -> Provider:
    """The client for provider ``name``: its wire format's class, with the preset's base URL unless the
    config gives one (LiteLLM knows where each of its providers is: none needed), or a 503 naming the
    extra to install when its library is missing."""
    preset = PRESETS[settings.type]
    module, cls, library, extra = CLASSES[preset.api]
    if importlib.util.find_spec(library) is None:
        raise MissingDependencyError(f"provider {name} ({settings.type}) needs the {library} package",
                                     f"pip install 'corral[{extra}]'")
    base_url = settings.base_url or preset.base_url
    provider: Provider = getattr(importlib.import_module(module), cls)(name, settings, base_url)
    return provider
