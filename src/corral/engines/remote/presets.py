"""The provider presets: for each ``type`` a config may name, the wire format it speaks, its base URL
and the list prices corral knows (dollars per million input / output tokens). Pure data.

Prices are the providers' published list prices as of 2025 (checked 2025-11): they change, so a
``prices`` table in the provider's config overrides any row, and the ledger records where each
price came from (``table``, ``config``, ``unknown``). A model not listed is ``unknown``, costed 0
and said so, never guessed."""

from __future__ import annotations

from dataclasses import dataclass, field

OPENAI, ANTHROPIC, OLLAMA, LITELLM = "openai", "anthropic", "ollama", "litellm"  # the wire formats


@dataclass(frozen=True)
class Preset:
    api: str  # the wire format: one of OPENAI, ANTHROPIC, OLLAMA, LITELLM
    base_url: str | None  # None: the config must give one
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # upstream id -> ($/M in, $/M out)
    needs_key: bool = True


PRESETS: dict[str, Preset] = {
    "openai": Preset(OPENAI, "https://api.openai.com/v1", {
        "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60), "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40), "gpt-5": (1.25, 10.00),
        "gpt-5-mini": (0.25, 2.00), "gpt-5-nano": (0.05, 0.40), "text-embedding-3-small": (0.02, 0.0),
        "text-embedding-3-large": (0.13, 0.0)}),
    "groq": Preset(OPENAI, "https://api.groq.com/openai/v1", {
        "llama-3.1-8b-instant": (0.05, 0.08), "llama-3.3-70b-versatile": (0.59, 0.79)}),
    "together": Preset(OPENAI, "https://api.together.xyz/v1", {
        "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo": (0.18, 0.18),
        "meta-llama/Llama-3.3-70B-Instruct-Turbo": (0.88, 0.88)}),
    "fireworks": Preset(OPENAI, "https://api.fireworks.ai/inference/v1"),
    "openrouter": Preset(OPENAI, "https://openrouter.ai/api/v1"),
    "deepseek": Preset(OPENAI, "https://api.deepseek.com/v1", {"deepseek-chat": (0.27, 1.10),
                                                               "deepseek-reasoner": (0.55, 2.19)}),
    "mistral": Preset(OPENAI, "https://api.mistral.ai/v1", {"mistral-small-latest": (0.10, 0.30),
                                                            "mistral-large-latest": (2.00, 6.00)}),
    "anthropic": Preset(ANTHROPIC, "https://api.anthropic.com", {
        "claude-haiku-4-5": (1.00, 5.00), "claude-sonnet-4-5": (3.00, 15.00), "claude-opus-4-1": (15.00, 75.00)}),
    "ollama": Preset(OLLAMA, "http://127.0.0.1:11434", needs_key=False),
    "litellm": Preset(LITELLM, None, needs_key=False),
}
