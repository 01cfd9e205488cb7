"""Model names as Ollama clients write them: ``NAME:TAG`` (``smollm2:latest``) names corral's
``NAME`` (every tag does: corral keeps one version of a name), while ``hf:ORG/NAME`` and
``pkg:MODULE`` references keep their scheme. Listings answer with ``NAME:latest``."""

from __future__ import annotations

import re

SCHEMES = ("hf", "pkg")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def corral_name(name: str) -> str:
    """``smollm2:latest`` -> ``smollm2``; ``hf:org/x:q4`` -> ``hf:org/x``; ``hf:org/x``, ``pkg:m`` as they are."""
    head, sep, tag = name.rpartition(":")
    if not sep or not head or head in SCHEMES or not _TAG.match(tag):
        return name
    return head


def ollama_name(name: str) -> str:
    """``smollm2`` -> ``smollm2:latest`` (what ``/api/tags`` lists)."""
    return name if corral_name(name) != name else f"{name}:latest"
