"""Make a torch model's CPU weights resident when it loads, so that memory measured at load is what it uses.

transformers and sentence-transformers map safetensors files and use the mapped bytes as the weights
(no copy on CPU when the stored dtype is the one loaded). A mapped page shows in the process's RSS only
once something reads it, and which pages a load happens to read depends on the page cache (the same
MiniLM load measured 33 MB once and 62 MB another time, of 91 MB of weights); the first forward pass
then reads every layer anyway. llama.cpp maps GGUF files with MAP_POPULATE and so shows the whole file
at load. Reading one byte of every page here does the same for torch engines: the registry's RSS delta
around a load then counts the weights in full, every time, and the first request takes no page faults.
"""

from __future__ import annotations

import itertools
import mmap
from typing import Any


def touch_weights(module: Any) -> int:
    """Read one byte per page of every CPU parameter and buffer of ``module``; returns the bytes covered."""
    import torch

    seen: set[int] = set()
    covered = 0
    with torch.no_grad():
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen or storage.nbytes() == 0:
                continue
            seen.add(storage.data_ptr())
            as_bytes = torch.empty(0, dtype=torch.uint8).set_(storage)
            as_bytes[:: mmap.PAGESIZE].sum()
            covered += storage.nbytes()
    return covered
