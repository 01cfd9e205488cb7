"""Memory estimates: facts read from headers at inspection, a figure computed for each way of loading.

Inspection stores the facts in :class:`~corral.models.info.MemoryEstimate` (weight bytes, K and V values
per token of context, tokenizer entries; parameters, dtype and context length are on ``ModelInfo``).
:func:`estimate_for` turns them into what one load with given options adds to the process: the figure
the registry plans with until it has measured a load (``runtime/memory.MemoryProbe``: the RSS delta
around the load, engine libraries imported first, plus torch's CUDA allocations).

What a CPU load adds, per engine (each piece measured with ``benchmarks/bench_memory.py``):

- llama_cpp: the whole GGUF file (llama.cpp maps it with MAP_POPULATE, so every page is resident at
  once); the KV cache, f16 K and V for ``parallel`` streams of the context rounded up to 256 cells
  (llama.cpp clears it when it creates it, so it is resident too); the vocabulary's host structures.
  Compute buffers are allocated but untouched until the first decode: they do not show at load.
- transformers: the weights (mapped safetensors, made resident at load by ``engines/resident.py``) and
  the tokenizer; with ``parallel`` > 1 the continuous batcher's paged KV cache, ``parallel`` x
  min(context, 2048) tokens in the weights' dtype, allocated and written by its warm-up. With one
  sequence ``generate`` makes its cache per request: nothing at load. The handler sizes this from the
  model's own context length; ``LoadOptions.context_length`` does not reach it.
- sentence_transformers: the weights and the tokenizer.
- spacy: the pipeline folder's files and what spaCy builds from them (the vocabulary's string store
  and lexemes, the components' models): loading en_core_web_sm (a 14.6 MiB folder) adds 56 MiB.
- faster_whisper: the weights in the compute type (``--dtype``; by default as stored, float16 run as
  float32 on a CPU) and the tokenizer; pocketsphinx: its model files and the search structures built
  from them.

On a GPU the weights (fp32 loaded as fp16 by the transformers engine) and the KV cache go to the device,
plus a CUDA context; that side is a model, not yet checked against a measurement.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

from corral.models.info import MemoryEstimate, ModelInfo

MiB = 1024**2
DEFAULT_CONTEXT = 4096  # the llama_cpp engine's context when none is asked for (engines/llama/handler.py)
LLAMA_CELL_PAD = 256  # llama.cpp rounds each KV stream up to a multiple of 256 cells
LLAMA_KV_BYTES = 2  # llama.cpp's default KV cache type is f16
BATCH_TOKENS_PER_SEQUENCE = 2048  # engines/transformers/continuous.py TOKENS_PER_SEQUENCE
BATCH_PAGE = 64  # engines/transformers/continuous.py PAGE_SIZE
TRANSFORMERS_CONTEXT = 2048  # the transformers handler's context when the config names none

# Host memory per tokenizer entry (token or merge), measured as the RSS a tokenizer load adds:
# llama.cpp's vocabulary (strings, token -> id map, merge ranks): 17 MiB for SmolLM2's 49,152 tokens +
# 48,900 merges; transformers' AutoTokenizer (the Rust tokenizer plus Python-side copies of the vocab):
# 45 MiB for the same tokenizer, and MiniLM's 30,522-entry WordPiece fits the same rate.
LLAMA_VOCAB_ENTRY_BYTES = 180
HF_TOKENIZER_ENTRY_BYTES = 480

# What a load adds besides weights, KV cache and tokenizer: the first load's library state (llama.cpp's
# context and output buffers; torch/transformers module construction and the library code pages it
# touches). Measured on SmolLM2 Q4_1 (llama_cpp), a GPT-2-size random model (transformers) and MiniLM
# (sentence_transformers), each the measured RSS delta less the pieces above, in a fresh process.
ENGINE_OVERHEAD = {"llama_cpp": 4 * MiB, "transformers": 16 * MiB, "sentence_transformers": 13 * MiB,
                   "spacy": 41 * MiB,  # spacy: en_core_web_sm's load less its folder (spacy imported first)
                   # faster_whisper: Whisper base less its weights as loaded (int8: 10 MiB, float32: 27 MiB);
                   # pocketsphinx: its en-US model's load less its files (90 MiB measured, 37 MiB of files);
                   # piper: en_US-joe-medium's onnxruntime session (96.8 MB) less its .onnx
                   "faster_whisper": 16 * MiB, "pocketsphinx": 53 * MiB, "piper": 32 * MiB}
OTHER_ENGINE_OVERHEAD = 64 * MiB  # engines not measured yet (diffusers)
BATCHER_OVERHEAD = 11 * MiB  # transformers' continuous batcher beyond its KV cache (warm-up, thread state)
CUDA_CONTEXT = 384 * MiB  # a CUDA context and its kernels; not measured here (no GPU on the dev machine)

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1, "int16": 2,
               "int8_float32": 1, "int8_float16": 1, "int8_bfloat16": 1}  # the last three: CTranslate2's


class LoadShape(Protocol):
    """What of a load's options sizes it (``engines.base.LoadOptions`` has these fields)."""

    @property
    def context_length(self) -> int | None: ...

    @property
    def parallel(self) -> int: ...


def _first_int(cfg: dict[str, Any], *keys: str) -> int | None:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and v > 0:
            return v
    return None


def kv_values_from_config(cfg: dict[str, Any]) -> int | None:
    """K and V values one token of context caches, all layers, from a transformers config."""
    text = cfg.get("text_config")
    cfg = text if isinstance(text, dict) else cfg
    layers = _first_int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first_int(cfg, "num_attention_heads", "n_head")
    hidden = _first_int(cfg, "hidden_size", "n_embd", "d_model")
    if not (layers and heads and hidden):
        return None
    kv_heads = _first_int(cfg, "num_key_value_heads") or heads
    head_dim = _first_int(cfg, "head_dim") or hidden // heads
    return 2 * layers * kv_heads * head_dim


def kv_values_from_gguf(meta: dict[str, Any], arch: str) -> int | None:
    """K and V values one token of context caches, all layers, from GGUF metadata."""
    def get(key: str) -> int | None:
        v = meta.get(f"{arch}.{key}")
        return v if isinstance(v, int) and v > 0 else None

    layers, heads, hidden = get("block_count"), get("attention.head_count"), get("embedding_length")
    if not (layers and heads and hidden):
        return None
    kv_heads = get("attention.head_count_kv") or heads
    key = get("attention.key_length") or hidden // heads
    value = get("attention.value_length") or key
    return layers * kv_heads * (key + value)


def load_dtype_bytes(info: ModelInfo, gpu: bool, dtype: str | None = None) -> int | None:
    """Bytes per weight as loaded: ``dtype`` when given, else fp32 as fp16 on a GPU, else as stored."""
    if dtype is None and gpu and info.dtype == "float32":
        dtype = "float16"
    if dtype is None and not gpu and info.engine == "faster_whisper" and info.dtype in ("float16", "bfloat16"):
        dtype = "float32"  # CTranslate2 runs half-precision weights as float32 on a CPU without fast fp16
    return DTYPE_BYTES.get(dtype or info.dtype or "")


def weights_bytes(info: ModelInfo, facts: MemoryEstimate, gpu: bool, dtype: str | None = None) -> int:
    """The weights as loaded: as stored, or re-cast to the load dtype (quantized weights stay as they are)."""
    stored = facts.weight_bytes or 0
    loaded, kept = load_dtype_bytes(info, gpu, dtype), DTYPE_BYTES.get(info.dtype or "")
    if info.quantization or info.engine == "llama_cpp" or not (info.parameters and loaded and kept):
        return stored
    return stored if loaded == kept else info.parameters * loaded


def kv_bytes(info: ModelInfo, facts: MemoryEstimate, options: LoadShape, gpu: bool, dtype: str | None = None) -> int:
    """The KV cache the engine allocates at load for these options."""
    per_token = facts.kv_values_per_token or 0
    parallel = max(1, options.parallel)
    if info.engine == "llama_cpp":
        context = options.context_length or min(info.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        cells = parallel * math.ceil(context / LLAMA_CELL_PAD) * LLAMA_CELL_PAD
        return per_token * LLAMA_KV_BYTES * cells
    if info.engine == "transformers" and parallel > 1:
        per_sequence = min(info.context_length or TRANSFORMERS_CONTEXT, BATCH_TOKENS_PER_SEQUENCE)
        tokens = parallel * math.ceil(per_sequence / BATCH_PAGE) * BATCH_PAGE
        return per_token * (load_dtype_bytes(info, gpu, dtype) or 4) * tokens
    return 0


def host_bytes(info: ModelInfo, facts: MemoryEstimate, options: LoadShape) -> int:
    """Tokenizer and engine state in host memory."""
    engine = info.engine or ""
    entry = LLAMA_VOCAB_ENTRY_BYTES if engine == "llama_cpp" else HF_TOKENIZER_ENTRY_BYTES
    batcher = BATCHER_OVERHEAD if engine == "transformers" and options.parallel > 1 else 0
    return (facts.vocab_entries or 0) * entry + ENGINE_OVERHEAD.get(engine, OTHER_ENGINE_OVERHEAD) + batcher


def estimate_for(info: ModelInfo, options: LoadShape, *, gpu: bool = False, dtype: str | None = None) -> int:
    """Bytes one load of ``info`` with ``options`` adds (host plus device when ``gpu``); ``dtype`` overrides
    the weights' load dtype. Manifests written before the facts existed keep their stored figure."""
    facts = info.memory
    if facts is None:
        return 0
    if facts.weight_bytes is None:
        return facts.gpu_bytes if gpu else facts.cpu_bytes
    total = weights_bytes(info, facts, gpu, dtype) + kv_bytes(info, facts, options, gpu, dtype)
    total += host_bytes(info, facts, options)
    return total + (CUDA_CONTEXT if gpu else 0)


class _Default:
    """The options inspection sizes its stored figures for: the engine's own context, one sequence."""

    context_length: int | None = None
    parallel: int = 1


def with_defaults(info: ModelInfo, facts: MemoryEstimate) -> MemoryEstimate:
    """``facts`` with cpu_bytes / gpu_bytes filled for the default load (what `corral list` shows)."""
    probe = dataclasses.replace(info, memory=facts)
    cpu, gpu = estimate_for(probe, _Default()), estimate_for(probe, _Default(), gpu=True)
    context = None
    if facts.kv_values_per_token and info.engine == "llama_cpp":
        context = min(info.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
    return MemoryEstimate(cpu, gpu, context, facts.weight_bytes, facts.kv_values_per_token, facts.vocab_entries)
