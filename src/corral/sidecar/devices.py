"""The devices this machine offers, probed without importing torch (``initialize`` answers at once):
the CPU, NVIDIA GPUs the driver lists, Apple's MPS on Apple silicon."""

from __future__ import annotations

import platform
from pathlib import Path


def probe_devices(nvidia_root: Path = Path("/proc/driver/nvidia/gpus")) -> list[str]:
    devices = ["cpu"]
    if nvidia_root.is_dir():
        devices += [f"cuda:{i}" for i, _ in enumerate(sorted(nvidia_root.iterdir()))]
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        devices.append("mps")
    return devices
