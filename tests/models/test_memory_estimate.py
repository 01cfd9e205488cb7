"""`models.memory.estimate_for`: the figure for a load follows the load's options, from real model headers.

The facts come from inspecting the real SmolLM2 GGUF and MiniLM folder (and a tiny random causal LM for the
transformers engine's batcher); the expected sizes are recomputed here from the headers themselves. The
slow test loads SmolLM2 through the registry in a fresh process and compares with what it measures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from corral.engines.base import LoadOptions
from corral.models import memory
from corral.models.gguf_reader import read_gguf_header
from corral.models.info import MemoryEstimate, ModelInfo
from corral.models.inspect import inspect_path
from corral.models.store import Entry, info_from_dict
from corral.runtime.memory import MemoryProbe
from corral.runtime.registry import Registry


@dataclass(frozen=True)
class Shape:
    context_length: int | None = None
    parallel: int = 1


def _gguf_kv_bytes_per_cell(path: Path) -> int:
    """f16 K and V of one token, all layers, straight from the GGUF header."""
    meta = read_gguf_header(path).metadata
    arch = meta["general.architecture"]
    head_dim = meta.get(f"{arch}.attention.key_length") or meta[f"{arch}.embedding_length"] // meta[
        f"{arch}.attention.head_count"]
    return int(2 * 2 * meta[f"{arch}.block_count"] * meta[f"{arch}.attention.head_count_kv"] * head_dim)


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> ModelInfo:
    return inspect_path(smollm2_path)


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> ModelInfo:
    return inspect_path(minilm_path)


def test_gguf_facts_come_from_the_header(smollm2: ModelInfo, smollm2_path: Path) -> None:
    assert smollm2.memory is not None
    assert smollm2.memory.weight_bytes == smollm2_path.stat().st_size  # llama.cpp maps the whole file
    assert smollm2.memory.kv_values_per_token is not None
    assert smollm2.memory.kv_values_per_token * 2 == _gguf_kv_bytes_per_cell(smollm2_path)
    assert smollm2.memory.vocab_entries and smollm2.memory.vocab_entries > 49_152  # tokens + merges


def test_parallel_adds_one_kv_stream_per_sequence(smollm2: ModelInfo, smollm2_path: Path) -> None:
    one = memory.estimate_for(smollm2, Shape(parallel=1))
    eight = memory.estimate_for(smollm2, Shape(parallel=8))
    context = min(smollm2.context_length or 4096, 4096)
    assert eight - one == 7 * context * _gguf_kv_bytes_per_cell(smollm2_path)


def test_context_scales_the_kv_cache(smollm2: ModelInfo, smollm2_path: Path) -> None:
    cell = _gguf_kv_bytes_per_cell(smollm2_path)
    small, large = (memory.estimate_for(smollm2, Shape(context_length=c, parallel=2)) for c in (1024, 2048))
    assert large - small == 2 * 1024 * cell
    # llama.cpp rounds each stream up to 256 cells: 1000 costs what 1024 does
    assert memory.estimate_for(smollm2, Shape(context_length=1000, parallel=2)) == small


def test_fp16_halves_the_weights(minilm: ModelInfo) -> None:
    assert minilm.dtype == "float32" and minilm.parameters and minilm.memory and minilm.memory.weight_bytes
    fp32 = memory.estimate_for(minilm, Shape())
    fp16 = memory.estimate_for(minilm, Shape(), dtype="float16")
    assert memory.weights_bytes(minilm, minilm.memory, gpu=False, dtype="float16") == minilm.parameters * 2
    assert fp32 - fp16 == minilm.memory.weight_bytes - minilm.parameters * 2
    assert fp32 - fp16 == pytest.approx(minilm.memory.weight_bytes / 2, rel=0.01)


def test_gpu_adds_a_cuda_context_and_loads_fp32_as_fp16(minilm: ModelInfo, smollm2: ModelInfo) -> None:
    assert minilm.memory and minilm.parameters and minilm.memory.weight_bytes
    cpu, gpu = memory.estimate_for(minilm, Shape()), memory.estimate_for(minilm, Shape(), gpu=True)
    assert gpu - cpu == memory.CUDA_CONTEXT - (minilm.memory.weight_bytes - minilm.parameters * 2)
    # quantized GGUF weights stay as they are
    assert (memory.estimate_for(smollm2, Shape(), gpu=True) - memory.estimate_for(smollm2, Shape())
            == memory.CUDA_CONTEXT)


def test_an_embedding_model_has_no_kv_cache(minilm: ModelInfo) -> None:
    assert memory.estimate_for(minilm, Shape(parallel=8, context_length=8192)) == memory.estimate_for(minilm, Shape())


def test_transformers_kv_is_the_batchers_paged_cache(tmp_path: Path) -> None:
    from tests.fixtures.tiny_models import build_causal_lm

    info = inspect_path(build_causal_lm("llama", tmp_path / "llama").path)
    assert info.memory and info.memory.kv_values_per_token and info.context_length
    one, four = memory.estimate_for(info, Shape(parallel=1)), memory.estimate_for(info, Shape(parallel=4))
    tokens = 4 * math.ceil(min(info.context_length, 2048) / 64) * 64
    assert four - one == info.memory.kv_values_per_token * 4 * tokens + memory.BATCHER_OVERHEAD  # float32 cache
    # the handler sizes its cache from the model's context, not LoadOptions.context_length
    assert memory.estimate_for(info, Shape(parallel=4, context_length=64)) == four


def test_stored_figures_match_the_default_load(smollm2: ModelInfo, minilm: ModelInfo) -> None:
    for info in (smollm2, minilm):
        assert info.memory is not None
        assert info.memory.cpu_bytes == memory.estimate_for(info, Shape())
        assert info.memory.gpu_bytes == memory.estimate_for(info, Shape(), gpu=True)


def test_manifests_without_facts_keep_their_figures(smollm2: ModelInfo) -> None:
    old = json.loads(json.dumps(smollm2.to_dict()))
    old["memory"] = {"cpu_bytes": 260_000_000, "gpu_bytes": 600_000_000, "context_length": 4096}  # 0.1 manifest
    info = info_from_dict(old)
    assert memory.estimate_for(info, Shape(parallel=8)) == 260_000_000
    assert memory.estimate_for(info, Shape(), gpu=True) == 600_000_000
    assert memory.estimate_for(replace(info, memory=None), Shape()) == 0
    assert MemoryEstimate(1, 2).weight_bytes is None


def test_constants_mirror_the_engines() -> None:
    from corral.engines.llama import handler
    from corral.engines.transformers import continuous

    assert memory.DEFAULT_CONTEXT == handler.DEFAULT_CONTEXT
    assert memory.BATCH_TOKENS_PER_SEQUENCE == continuous.TOKENS_PER_SEQUENCE
    assert memory.BATCH_PAGE == continuous.PAGE_SIZE


def _registry(entry: Entry, options: LoadOptions) -> Registry:
    return Registry(resolve=lambda name: entry, opener=lambda e, o: pytest.fail("no load here"), options=options,
                    budget_bytes=2**40, max_loaded=1, keep_alive=-1, probe=MemoryProbe(), measurements=dict,
                    record=lambda *measured: None)


def test_registry_plans_with_its_own_options(smollm2: ModelInfo, smollm2_path: Path) -> None:
    entry = Entry("smollm2", str(smollm2_path), "path", smollm2_path, False, smollm2, 0.0)
    need_1, estimate_1 = _registry(entry, LoadOptions(device="cpu", parallel=1)).need_for(entry)
    need_8, estimate_8 = _registry(entry, LoadOptions(device="cpu", parallel=8)).need_for(entry)
    assert (need_1, need_8) == (estimate_1, estimate_8)
    assert estimate_8 == memory.estimate_for(smollm2, LoadOptions(parallel=8)) > estimate_1


MEASURE = """
import asyncio, json, sys
from pathlib import Path
from corral.engines.base import LoadOptions
from corral.models.inspect import inspect_path
from corral.models.store import Entry
from corral.runtime.loader import open_model
from corral.runtime.memory import MemoryProbe
from corral.runtime.registry import Registry

async def main():
    path = Path(sys.argv[1])
    entry = Entry("m", str(path), "path", path, False, inspect_path(path), 0.0)
    registry = Registry(resolve=lambda name: entry, opener=open_model,
                        options=LoadOptions(device="cpu", parallel=1, threads=1), budget_bytes=2**62, max_loaded=1,
                        keep_alive=-1, probe=MemoryProbe(), measurements=dict, record=lambda *m: None)
    loaded = await registry.get("m")
    print(json.dumps([loaded.estimate_bytes, loaded.measured_bytes]))
    await registry.close()

asyncio.run(main())
"""


@pytest.mark.slow
def test_smollm2_estimate_is_within_target_of_the_registrys_measurement(smollm2_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(smollm2_path)], capture_output=True, text=True,
                         timeout=300, check=True)  # a fresh process: nothing loaded before, as in a server
    estimate, measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(estimate - measured) <= max(0.25 * measured, 32 * 1024**2), (estimate, measured)
