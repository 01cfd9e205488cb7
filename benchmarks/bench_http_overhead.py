"""Latency of corral's HTTP layer on trivially fast requests, sequential requests on one keep-alive connection:

(a) `GET /health` on `corral serve` vs the same route on a bare FastAPI app served by the same uvicorn with the
    same settings (uvloop, httptools): what corral's middleware (host/origin guard, auth) and routing cost;
(b) `POST /v1/embeddings` with a one-word input to corral (minilm) vs calling the same model's
    `SentenceTransformer.encode([word], normalize_embeddings=True)` in-process: the whole HTTP + scheduling
    overhead. The bare app's own /v1/embeddings route (encode per request) is measured too, to split that
    overhead into plain HTTP and corral's own.

Every case is measured with two clients, one after the other on the same server: `raw` (harness.RawClient, a
blocking socket speaking just enough HTTP/1.1; microseconds of client CPU per request) and `httpx` (httpx.Client,
what the first version of this script used; a few hundred microseconds of client CPU per request, on the same
2 cores as the server). Targets, checked at the end for each client: corral over in-process <= 2 ms p50 on (b),
corral's /health < 1 ms p50.

Each server runs alone in its own subprocess on a free 127.0.0.1 port (the bare app is this script re-run with
--serve-bare); --warmup requests are discarded, then --requests timed one after another. Prints p50/p99/mean
in one table, and the CPU other processes used meanwhile (on a shared 2-core machine that moves p99).

    python benchmarks/bench_http_overhead.py [--requests 600] [--warmup 50] [--retries-if-busy 2] [--word hello]
                                             [--clients raw,httpx]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from harness import BUSY, CpuMeter, RawClient, free_port, guard_processes, model_dir, print_environment, server
from pydantic import BaseModel

# ---------------------------------------------------------------- the bare app


class Body(BaseModel):  # at module level: FastAPI resolves the handlers' (string) annotations here
    input: str
    model: str = "minilm"


def serve_bare(port: int, folder: str) -> None:
    """FastAPI with no middleware, on uvicorn configured as `corral serve` configures it."""
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(folder, device="cpu")
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/embeddings")
    def embeddings(body: Body) -> dict[str, Any]:
        vector = model.encode([body.input], normalize_embeddings=True)[0]
        return {"object": "list", "model": body.model,
                "data": [{"object": "embedding", "index": 0, "embedding": vector.tolist()}]}

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on", loop="uvloop", http="httptools")
    uvicorn.Server(config).run()


# ---------------------------------------------------------------- timing


@dataclass
class Stats:
    name: str
    times: list[float]  # seconds
    other_cpu: float = float("nan")

    def pct(self, q: float) -> float:
        xs = sorted(self.times)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000

    def mean(self) -> float:
        return statistics.fmean(self.times) * 1000


def timeit(name: str, call: Callable[[], None], args: argparse.Namespace, server_pid: int | None) -> Stats:
    """args.warmup calls, then args.requests timed ones; again (up to args.retries_if_busy times) while other
    processes used the CPU meanwhile, keeping the least disturbed attempt."""
    for _ in range(args.warmup):
        call()
    best: Stats | None = None
    for attempt in range(1 + args.retries_if_busy):
        times = []
        with CpuMeter(server_pid) as cpu:
            for _ in range(args.requests):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
        s = Stats(name, times, cpu.other)
        print(f"  {name}: p50 {s.pct(0.5):.3f} ms, p99 {s.pct(0.99):.3f} ms, mean {s.mean():.3f} ms over "
              f"{args.requests}; other processes used {cpu.other:.2f} cores"
              + ("  <-- the machine was busy: numbers are unreliable" if cpu.other > BUSY else ""), flush=True)
        if best is None or s.other_cpu < best.other_cpu:
            best = s
        if s.other_cpu <= BUSY:
            break
        if attempt < args.retries_if_busy:
            print("      other processes were busy: measuring again", flush=True)
    assert best is not None
    return best


Caller = Callable[[str, str, dict[str, Any] | None, Callable[[Any], bool]], Callable[[], None]]


def httpx_caller(client: httpx.Client, base: str) -> Caller:
    def make(method: str, path: str, body: dict[str, Any] | None, check: Callable[[Any], bool]) -> Callable[[], None]:
        def call() -> None:
            resp = client.request(method, base + path, json=body)
            if resp.status_code != 200 or not check(resp.json()):
                raise RuntimeError(f"{method} {path}: HTTP {resp.status_code} {resp.text[:200]}")
        return call
    return make


def raw_caller(client: RawClient) -> Caller:
    def make(method: str, path: str, body: dict[str, Any] | None, check: Callable[[Any], bool]) -> Callable[[], None]:
        data = None if body is None else json.dumps(body).encode()

        def call() -> None:
            status, payload = client.request(method, path, data)
            if status != 200 or not check(json.loads(payload)):
                raise RuntimeError(f"{method} {path}: HTTP {status} {payload[:200]!r}")
        return call
    return make


def one_vector(data: Any) -> bool:
    return len(data["data"]) == 1 and len(data["data"][0]["embedding"]) == 384


Results = dict[str, tuple[Stats, Stats]]  # client -> (GET /health, POST /v1/embeddings)


def measure_server(label: str, argv: Sequence[str], ready_url: str, port: int, args: argparse.Namespace,
                   env: dict[str, str] | None = None) -> Results:
    out: Results = {}
    with server(label, argv, ready_url, env=env) as (startup, pid):
        print(f"{label}: ready in {startup:.1f} s", flush=True)
        for kind in args.clients:
            with contextlib.ExitStack() as stack:  # one connection per client, kept alive
                if kind == "httpx":
                    make = httpx_caller(stack.enter_context(httpx.Client(timeout=30.0)), f"http://127.0.0.1:{port}")
                else:
                    raw = RawClient("127.0.0.1", port)
                    stack.callback(raw.close)
                    make = raw_caller(raw)
                health = timeit(f"{label} [{kind}] GET /health",
                                make("GET", "/health", None, lambda d: d == {"status": "ok"}), args, pid)
                embed = timeit(f"{label} [{kind}] POST /v1/embeddings {args.word!r}",
                               make("POST", "/v1/embeddings", {"model": "minilm", "input": args.word}, one_vector),
                               args, pid)
                out[kind] = (health, embed)
    return out


def in_process(folder: Path, args: argparse.Namespace) -> Stats:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")

    def encode() -> None:
        model.encode([args.word], normalize_embeddings=True)

    return timeit(f"in-process encode([{args.word!r}])", encode, args, None)


def row(label: str, s: Stats) -> str:
    return f"| {label} | {s.pct(0.5):.3f} | {s.pct(0.99):.3f} | {s.mean():.3f} |"


def diff(label: str, a: Stats, b: Stats) -> str:
    return (f"| {label} | {a.pct(0.5) - b.pct(0.5):+.3f} | {a.pct(0.99) - b.pct(0.99):+.3f} | "
            f"{a.mean() - b.mean():+.3f} |")


def report(corral: Results, bare: Results, local: Stats, args: argparse.Namespace) -> None:
    w = repr(args.word)
    print(f"\n| request ({args.requests} sequential, keep-alive; [client]) | p50 ms | p99 ms | mean ms |")
    print("|---|---:|---:|---:|")
    print(row(f"(b) in-process encode([{w}])", local))
    for kind in args.clients:
        (c_health, c_embed), (b_health, b_embed) = corral[kind], bare[kind]
        print(row(f"(a) [{kind}] corral GET /health", c_health))
        print(row(f"(a) [{kind}] bare FastAPI GET /health, same uvicorn", b_health))
        print(diff(f"(a) [{kind}] corral's middleware + routing (difference)", c_health, b_health))
        print(row(f"(b) [{kind}] corral POST /v1/embeddings {w}", c_embed))
        print(row(f"(b) [{kind}] bare FastAPI POST /v1/embeddings {w} (encode in the handler)", b_embed))
        print(diff(f"(b) [{kind}] corral over in-process (corral - in-process)", c_embed, local))
        print(diff(f"(b) [{kind}] of which plain FastAPI/uvicorn HTTP (bare - in-process)", b_embed, local))
        print(diff(f"(b) [{kind}] of which corral's own (corral - bare)", c_embed, b_embed))
    print()
    for kind in args.clients:
        over = corral[kind][1].pct(0.5) - local.pct(0.5)
        health = corral[kind][0].pct(0.5)
        print(f"[{kind}] corral over in-process: {over:+.3f} ms p50 (target <= 2 ms: "
              f"{'met' if over <= 2.0 else 'NOT met'}); corral GET /health: {health:.3f} ms p50 "
              f"(target < 1 ms: {'met' if health < 1.0 else 'NOT met'})")
    stats = [local, *(s for r in (corral, bare) for pair in r.values() for s in pair)]
    busy = max(s.other_cpu for s in stats)
    print(f"(most CPU other processes used during a measurement: {busy:.2f} cores"
          + ("; the machine was busy, rerun when idle)" if busy > BUSY else ")"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=600, help="timed requests per case")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--retries-if-busy", type=int, default=2,
                    help="measure a case again when other processes used more than 0.25 cores meanwhile")
    ap.add_argument("--word", default="hello", help="the one-word embeddings input")
    ap.add_argument("--clients", default="raw,httpx", type=lambda s: [c for c in s.split(",") if c],
                    help="comma-separated: raw, httpx (default both)")
    ap.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = model_dir()
    if args.serve_bare:
        serve_bare(args.serve_bare, str(folder))
        return
    if not args.clients or set(args.clients) - {"raw", "httpx"}:
        ap.error("--clients takes raw and/or httpx")
    guard_processes()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import torch

    print_environment("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "httpx", "sentence-transformers",
                      extra=f"torch threads={torch.get_num_threads()}")
    print(f"settings: sequential requests on one keep-alive connection per client ({', '.join(args.clients)}), "
          f"{args.warmup} warm-up + {args.requests} timed per case; embeddings input {args.word!r}; model {folder}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as home:
        port = free_port()
        argv = [sys.executable, "-m", "corral", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--models", "minilm", "--grace", "2s"]
        corral = measure_server("corral", argv, f"http://127.0.0.1:{port}/ready", port, args,
                                env={**os.environ, "CORRAL_HOME": home})
    port = free_port()
    bare = measure_server("bare FastAPI", [sys.executable, __file__, "--serve-bare", str(port)],
                          f"http://127.0.0.1:{port}/health", port, args)
    report(corral, bare, in_process(folder, args), args)

if __name__ == "__main__":
    main()
