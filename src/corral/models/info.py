"""What inspection learns about a model, without loading its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Requirement:
    package: str  # distribution name as pip knows it
    installed: bool


@dataclass(frozen=True)
class MemoryEstimate:
    """Figures for the default load (cpu_bytes, gpu_bytes) and the header facts ``memory.estimate_for`` sizes
    any load from. The facts are None in manifests written before they existed; the figures then stand."""

    cpu_bytes: int
    gpu_bytes: int
    context_length: int | None = None  # the context the KV-cache share was sized for
    weight_bytes: int | None = None  # the weights as stored (GGUF: the whole file, which llama.cpp maps)
    kv_values_per_token: int | None = None  # K and V values one token of context caches, all layers
    vocab_entries: int | None = None  # tokenizer tokens + merges (host memory of the tokenizer)


@dataclass
class ModelInfo:
    path: str  # the folder or file inspected
    format: str  # "safetensors" | "gguf" | "onnx" | "pickle" | "unknown"
    architecture: str | None = None  # e.g. "LlamaForCausalLM", or GGUF's "llama"
    model_type: str | None = None  # config.json model_type / GGUF general.architecture
    tasks: list[str] = field(default_factory=list)  # Task values, most specific first
    engine: str | None = None  # "llama_cpp" | "transformers" | "sentence_transformers" | "diffusers"
    parameters: int | None = None
    dtype: str | None = None  # e.g. "float32", "bfloat16"
    quantization: str | None = None  # e.g. "Q4_1"
    context_length: int | None = None
    size_bytes: int = 0  # bytes of weight files
    requirements: list[Requirement] = field(default_factory=list)
    memory: MemoryEstimate | None = None
    chat_template: bool = False  # whether the model ships a chat template
    needs_pickle: bool = False  # weights only in a pickle-based format
    needs_remote_code: bool = False  # config has auto_map / custom code
    sources: list[str] = field(default_factory=list)  # files the facts came from
    name_hint: str | None = None  # the model's own name for itself (GGUF general.name, config _name_or_path)
    size_multiple: int | None = None  # image/video generation: width and height must be multiples of this
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
