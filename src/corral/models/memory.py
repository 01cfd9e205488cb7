"""Memory estimates from header facts: weights + KV cache + a fixed runtime overhead.

cpu_bytes: weights as stored, plus an fp16 KV cache for ``context`` tokens, plus overhead.
gpu_bytes: weights at 16-bit when stored wider (corral loads fp32 models in half precision on
GPUs), the same KV cache, plus the CUDA context. These are estimates; the runtime records the
measured figure after a real load.
"""

from __future__ import annotations

from typing import Any

from corral.models.info import MemoryEstimate

RUNTIME_OVERHEAD = 64 * 1024**2
CUDA_CONTEXT = 384 * 1024**2
DEFAULT_CONTEXT = 4096


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, context: int) -> int:
    return 2 * layers * kv_heads * head_dim * context * 2  # K and V, fp16


def _first_int(cfg: dict[str, Any], *keys: str) -> int | None:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and v > 0:
            return v
    return None


def kv_from_config(cfg: dict[str, Any], context: int) -> int:
    layers = _first_int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first_int(cfg, "num_attention_heads", "n_head")
    hidden = _first_int(cfg, "hidden_size", "n_embd", "d_model")
    if not (layers and heads and hidden):
        return 0
    kv_heads = _first_int(cfg, "num_key_value_heads") or heads
    head_dim = _first_int(cfg, "head_dim") or hidden // heads
    return kv_cache_bytes(layers, kv_heads, head_dim, context)


def kv_from_gguf(meta: dict[str, Any], arch: str, context: int) -> int:
    def get(key: str) -> int | None:
        v = meta.get(f"{arch}.{key}")
        return v if isinstance(v, int) and v > 0 else None

    layers, heads, hidden = get("block_count"), get("attention.head_count"), get("embedding_length")
    if not (layers and heads and hidden):
        return 0
    kv_heads = get("attention.head_count_kv") or heads
    head_dim = get("attention.key_length") or hidden // heads
    return kv_cache_bytes(layers, kv_heads, head_dim, context)


def estimate(weight_bytes: int, bytes_per_param: float, parameters: int | None,
             kv_bytes: int, context: int | None) -> MemoryEstimate:
    gpu_weights = weight_bytes
    if parameters and bytes_per_param > 2:
        gpu_weights = parameters * 2
    return MemoryEstimate(
        cpu_bytes=weight_bytes + kv_bytes + RUNTIME_OVERHEAD,
        gpu_bytes=gpu_weights + kv_bytes + CUDA_CONTEXT,
        context_length=context,
    )
