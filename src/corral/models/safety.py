"""The one gate between a model's files and the libraries that would execute them."""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import UnsafeModelError
from corral.models.info import ModelInfo


@dataclass(frozen=True)
class Trust:
    """Explicit opt-ins. Both default to off; engines pass exactly these values to libraries."""

    trust_remote_code: bool = False
    allow_pickle: bool = False


def check_trust(name: str, info: ModelInfo, trust: Trust) -> None:
    if info.needs_pickle and not trust.allow_pickle:
        raise UnsafeModelError(
            f"{name}: its weights are only in a pickle-based format (.bin/.pt/.ckpt/.pkl), "
            "which can run arbitrary code when loaded; refused",
            "prefer a safetensors or GGUF version; if you trust the source, pass --allow-pickle")
    if info.needs_remote_code and not trust.trust_remote_code:
        raise UnsafeModelError(
            f"{name}: the model ships its own Python code (auto_map in its config, or diffusers "
            "pipeline parts from outside diffusers and transformers), "
            "which corral does not run by default; refused",
            "read that code first; if you trust it, pass --trust-remote-code")


def safetensors_rule(trust: Trust) -> bool | None:
    """The ``use_safetensors`` value for transformers / diffusers / sentence-transformers loads: True (only
    safetensors) unless pickle is allowed, then None (safetensors where present, else the pickle files).
    ``False`` would be wrong: it makes the libraries skip safetensors files altogether."""
    return None if trust.allow_pickle else True
