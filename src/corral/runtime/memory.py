"""Memory: how much there is (for the default budget and a load that ran out) and how much a load really took."""

from __future__ import annotations

import os
from dataclasses import dataclass


def human(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _torch_cuda() -> object | None:
    import sys

    torch = sys.modules.get("torch")  # only if an engine already imported it; never import torch here
    if torch is not None and torch.cuda.is_available():
        return torch
    return None


@dataclass(frozen=True)
class Snapshot:
    rss: int
    cuda_allocated: int


class MemoryProbe:
    def snapshot(self, device: str | None) -> Snapshot:
        import psutil

        torch = _torch_cuda()
        cuda = int(torch.cuda.memory_allocated()) if torch is not None else 0  # type: ignore[attr-defined]
        return Snapshot(int(psutil.Process(os.getpid()).memory_info().rss), cuda)

    def delta(self, before: Snapshot, device: str | None) -> int:
        after = self.snapshot(device)
        return max(0, after.rss - before.rss) + max(0, after.cuda_allocated - before.cuda_allocated)

    def free_bytes(self, device: str | None) -> tuple[int, str]:
        """(bytes free now, where): the GPU's free memory when ``device`` is one torch sees, else RAM's."""
        torch = _torch_cuda() if self.uses_gpu(device) else None
        if torch is not None:
            free, _total = torch.cuda.mem_get_info()  # type: ignore[attr-defined]
            return int(free), "on the GPU"
        import psutil

        return int(psutil.virtual_memory().available), "in RAM"

    def uses_gpu(self, device: str | None) -> bool:
        return device not in (None, "cpu") and device != "auto"

    def device_name(self, device: str | None) -> str:
        return device or "auto"

    @staticmethod
    def default_budget(share: float = 0.7) -> int:
        """A safe share of the memory available now (RAM; plus free VRAM when torch sees CUDA)."""
        import psutil

        budget = int(psutil.virtual_memory().available * share)
        torch = _torch_cuda()
        if torch is not None:
            free, _total = torch.cuda.mem_get_info()  # type: ignore[attr-defined]
            budget += int(free * share)
        return budget
