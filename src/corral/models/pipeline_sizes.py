"""The pixel multiple a diffusers pipeline's width and height must be, read from its folder's part
configs without loading anything: the VAE's spatial down-scaling (``spatial_compression_ratio`` /
``scale_factor_spatial`` where a video VAE names it, else 2 per down block: ``2 ** (len(
block_out_channels) - 1)``, as diffusers' pipelines compute ``vae_scale_factor``) times the
transformer's patch size (its last number for video transformers), and a multiple of 8 (what
Stable Diffusion's ``check_inputs`` wants whatever its VAE). None when the VAE config says neither:
the engine checks the loaded pipeline anyway (``engines.diffusers.pipes.size_multiple``), this only
lets a door refuse a size before any work starts (a video job, before it is queued)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.errors import UsageError

MIN_MULTIPLE = 8


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def vae_factor(vae: dict[str, Any]) -> int | None:
    for key in ("spatial_compression_ratio", "scale_factor_spatial"):
        if (factor := _positive(vae.get(key))) is not None:
            return factor
    blocks = vae.get("block_out_channels")
    return 2 ** (len(blocks) - 1) if isinstance(blocks, list) and blocks else None


def patch_size(transformer: dict[str, Any]) -> int:
    size = transformer.get("patch_size")
    if isinstance(size, list) and size:
        size = size[-1]
    return _positive(size) or 1


def size_multiple(root: Path, read_json: Callable[[Path], dict[str, Any]]) -> int | None:
    """Width and height of what the pipeline in ``root`` makes must be multiples of this (None: unknown)."""
    vae_config = root / "vae" / "config.json"
    factor = vae_factor(read_json(vae_config)) if vae_config.is_file() else None
    if factor is None:
        return None
    transformer_config = root / "transformer" / "config.json"
    patch = patch_size(read_json(transformer_config)) if transformer_config.is_file() else 1
    return math.lcm(MIN_MULTIPLE, factor * patch)


def check_multiple(multiple: int, width: int | None, height: int | None, example: str | None = None) -> None:
    """A 422 naming the sizes the pipeline accepts unless ``width`` and ``height`` (None: the pipeline's
    default) are positive multiples of ``multiple``."""
    bad = [f"{name} {value}" for name, value in (("width", width), ("height", height))
           if value is not None and (value <= 0 or value % multiple)]
    if bad:
        raise UsageError(f"{' and '.join(bad)}: this pipeline makes images whose width and height are "
                         f"multiples of {multiple} pixels",
                         f"ask for a size such as {example or f'{multiple * 64}x{multiple * 64}'}")
