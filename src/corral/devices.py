"""Device manager: which accelerator to use, probed lazily (torch is imported only here)."""

from __future__ import annotations

from corral.errors import UsageError

VALID_PREFIXES = ("cpu", "cuda", "mps", "auto")


def check_device(device: str | None) -> str | None:
    if device is None or device == "auto":
        return None
    base, _, index = device.partition(":")
    if base not in VALID_PREFIXES or (index and not index.isdigit()):
        raise UsageError(f"unknown device {device!r}", "use cpu, cuda, cuda:N, mps or auto")
    return device


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's cpuset, `taskset`), at
    least 1: what a CPU engine's thread count defaults to (``os.cpu_count()`` counts the machine's)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def wants_gpu(device: str | None) -> bool:
    """True unless the user asked for the CPU (engines then use a GPU when one exists)."""
    return check_device(device) != "cpu"


def pick_torch_device(requested: str | None) -> str:
    """The torch device string: the user's choice, else CUDA, else MPS, else CPU."""
    requested = check_device(requested)
    import torch

    if requested:
        base = requested.partition(":")[0]
        if base == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device {requested!r} was asked for but CUDA is not available",
                             "drop --device or use --device cpu")
        if base == "mps" and not torch.backends.mps.is_available():
            raise UsageError("device 'mps' was asked for but Apple MPS is not available",
                             "drop --device or use --device cpu")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def torch_dtype(requested: str | None, device: str, stored: str | None) -> object:
    """The dtype a torch engine loads weights in: the user's choice; else half precision on CUDA
    for weights stored as float32; else as stored ("auto")."""
    import torch

    if requested and requested != "auto":
        return getattr(torch, requested)
    return torch.float16 if device.startswith("cuda") and stored == "float32" else "auto"
