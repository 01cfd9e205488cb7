"""Per-sequence llama.cpp sampler chains and log-probabilities, for :mod:`corral.engines.llama.batch`.

The chain mirrors what ``llama_cpp.Llama.create_completion`` builds for the settings corral passes it
(greedy at temperature 0; otherwise top-k 40, top-p, min-p 0.05, temperature, then a seeded draw), so
a sequence decoded in a batch samples from the same distribution, with the same RNG stream, as it
would through :class:`corral.engines.llama.handler.LlamaCppHandler`.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

from corral.errors import UsageError
from corral.tasks import Sampling

# llama-cpp-python's defaults for the knobs corral does not expose (Llama.create_completion).
TOP_K = 40
MIN_P = 0.05


class SamplerChain:
    """One llama.cpp sampler chain (``llama_sampler_chain_init``) owned by one sequence."""

    def __init__(self, vocab: Any, sampling: Sampling, grammar: str | None = None) -> None:
        import llama_cpp

        self._ll: Any = llama_cpp
        self.ptr: Any = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if grammar is not None:
            constraint = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not constraint:
                self.close()
                raise UsageError("the grammar does not parse (GBNF with a rule named 'root' expected)")
            self._add(constraint)
        if sampling.temperature <= 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
        else:
            seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
            self._add(llama_cpp.llama_sampler_init_top_k(TOP_K if sampling.top_k is None else sampling.top_k))
            self._add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            self._add(llama_cpp.llama_sampler_init_min_p(MIN_P, 1))
            self._add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
            self._add(llama_cpp.llama_sampler_init_dist(seed))

    def _add(self, sampler: Any) -> None:
        self._ll.llama_sampler_chain_add(self.ptr, sampler)  # the chain owns (and frees) it

    def sample(self, ctx: Any, idx: int) -> int:
        """Sample from output row ``idx`` of the last decode and accept the token (grammar advances)."""
        return int(self._ll.llama_sampler_sample(self.ptr, ctx, idx))

    def close(self) -> None:
        if self.ptr is not None:
            self._ll.llama_sampler_free(self.ptr)
            self.ptr = None


def log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Log-probabilities of raw logits (the model's distribution, before any sampler)."""
    shifted = logits - logits.max()
    result: npt.NDArray[np.float32] = shifted - np.float32(np.log(np.exp(shifted).sum(dtype=np.float64)))
    return result


def logits_row(ctx: Any, idx: int, n_vocab: int) -> npt.NDArray[np.float32]:
    """A copy of output row ``idx``'s logits (the buffer is overwritten by the next decode)."""
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(ctx, idx)
    if not ptr:
        raise RuntimeError(f"llama.cpp has no logits for batch row {idx}")
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)).copy()


def top_logprobs(logprobs: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely tokens, best first (ties by token id)."""
    k = max(0, min(k, logprobs.shape[0]))
    if k == 0:
        return []
    part = np.argpartition(-logprobs, k - 1)[:k]
    order = sorted(part.tolist(), key=lambda t: (-float(logprobs[t]), t))
    return [(int(t), float(logprobs[t])) for t in order]
