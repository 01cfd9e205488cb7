"""A Hugging Face task answer that is a file's bytes (audio, an image), not JSON: the HTTP door
sends it as the body with its media type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Binary:
    data: bytes
    media_type: str
