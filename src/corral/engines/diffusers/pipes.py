"""What corral needs to know of a loaded diffusers pipeline, through its public attributes: the
pixel multiple its sizes must be, its default size, the parameters its ``__call__`` takes, the
dtype to load it in, and its video output as RGB frames.

Sizes: a pipeline's latents are ``vae_scale_factor`` times smaller than the image (its image or
video processor's ``config.vae_scale_factor``: 16 for Flux, which packs 2x2 latents); a
transformer denoiser (DiT: SD3, Wan, CogVideoX) patchifies the latents by its ``patch_size``; a
UNet resizes its own upsampling for latents off its grid, so it adds no factor. Stable Diffusion's
``check_inputs`` wants multiples of 8 whatever its VAE, hence the least common multiple with 8."""

from __future__ import annotations

import inspect
import math
from typing import Any

from corral.models.pipeline_sizes import check_multiple

MIN_MULTIPLE = 8


def call_params(pipeline: Any) -> frozenset[str]:
    """The keyword arguments the pipeline's ``__call__`` takes."""
    return frozenset(inspect.signature(type(pipeline).__call__).parameters)


def _processor_factor(pipeline: Any) -> int:
    for name in ("image_processor", "video_processor"):
        config = getattr(getattr(pipeline, name, None), "config", None)
        factor = getattr(config, "vae_scale_factor", None)
        if isinstance(factor, int) and factor > 0:
            return factor
    for name in ("vae_scale_factor_spatial", "vae_scale_factor"):
        factor = getattr(pipeline, name, None)
        if isinstance(factor, int) and factor > 0:
            return factor
    return MIN_MULTIPLE


def _patch(pipeline: Any) -> int:
    size = getattr(getattr(getattr(pipeline, "transformer", None), "config", None), "patch_size", None)
    if isinstance(size, (list, tuple)) and size:
        size = size[-1]  # (frames, height, width) for video transformers
    return size if isinstance(size, int) and size > 0 else 1


def size_multiple(pipeline: Any) -> int:
    """Width and height must be multiples of this many pixels."""
    return math.lcm(MIN_MULTIPLE, _processor_factor(pipeline) * _patch(pipeline))


def default_size(pipeline: Any) -> tuple[int, int] | None:
    """(width, height) the pipeline makes when given none: its denoiser's sample size in pixels."""
    denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if isinstance(sample, (list, tuple)) and len(sample) == 2:
        height, width = sample
    elif isinstance(sample, int):
        height = width = sample
    else:
        return None
    factor = getattr(pipeline, "vae_scale_factor", None) or _processor_factor(pipeline)
    return int(width) * factor, int(height) * factor


def check_size(pipeline: Any, width: int | None, height: int | None) -> None:
    """A 422 naming the sizes the pipeline accepts unless ``width`` and ``height`` are multiples of
    its pixel multiple (a size left out is the pipeline's default)."""
    default = default_size(pipeline)
    check_multiple(size_multiple(pipeline), width, height, f"{default[0]}x{default[1]}" if default else None)


def load_dtype(requested: str | None, device: str, stored: str | None) -> Any:
    """The dtype a pipeline loads in: the user's choice; else half precision on CUDA (bfloat16
    where that is how the weights are stored); else float32 (half precision on a CPU is slow, and
    some of its operations are missing)."""
    import torch

    if requested and requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if stored == "bfloat16" else torch.float16
    return torch.float32


def frames_of(output: Any) -> list[Any]:
    """The first video of a video pipeline's ``frames`` (numpy, torch or PIL; floats in [0, 1] or
    uint8) as RGB PIL images."""
    import numpy as np
    from PIL import Image

    video = output[0]
    if isinstance(video, (list, tuple)) and video and isinstance(video[0], Image.Image):
        return [frame.convert("RGB") for frame in video]
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    array = np.asarray(video)
    if array.ndim != 4:
        raise ValueError(f"unexpected video output of shape {array.shape}")
    if array.shape[-1] not in (1, 3, 4) and array.shape[1] in (1, 3, 4):
        array = array.transpose(0, 2, 3, 1)  # (frames, channels, height, width)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return [Image.fromarray(frame[..., :3] if frame.shape[-1] >= 3 else frame[..., 0]).convert("RGB")
            for frame in array]
