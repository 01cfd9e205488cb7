"""`corral serve --ray`: what Ray Serve adds and what a second replica buys, for the embedding model (minilm).

Three servers, one at a time, each a subprocess on a free 127.0.0.1 port with minilm preloaded:
  1. `corral serve` (direct: uvicorn, no Ray): the baseline;
  2. `corral serve --ray --replicas 1 --replica-cpus 2`: a local Ray head, Serve's HTTP proxy, one replica with
     both cores (Ray gives it 2 math threads, as the direct server has);
  3. `corral serve --ray --replicas 2 --replica-cpus 1`: two replicas with one core each.
For each: aggregate embeddings/s with --clients concurrent requests (one sentence each; --rounds rounds after a
warm-up), then the latency of one request at a time (--sequential requests). Prints one table and two ratios:
throughput of 2 replicas / 1 replica (on 2 cores the CPU is the ceiling: the replicas share it, and corral
direct already batches concurrent requests), and the proxy's added latency (Ray 1 replica - direct, p50).

    python benchmarks/bench_ray.py [--clients 32] [--rounds 20] [--sequential 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence

from bench_server_embed import LOAD
from harness import BUSY, free_port, guard_processes, print_environment, server
from rounds import Run, measure_rounds, run_rounds

SETUPS: tuple[tuple[str, Sequence[str]], ...] = (
    ("corral serve (direct)", ()),
    ("corral serve --ray, 1 replica x 2 CPUs", ("--ray", "--replicas", "1", "--replica-cpus", "2")),
    ("corral serve --ray, 2 replicas x 1 CPU", ("--ray", "--replicas", "2", "--replica-cpus", "1")),
)


def measure(name: str, flags: Sequence[str], args: argparse.Namespace) -> tuple[Run, Run]:
    """(concurrent run, one-at-a-time run) against one server."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as home:
        ray_tmp = tempfile.mkdtemp(prefix="crb", dir="/tmp")  # Ray's sockets: a short path of this run's own
        port = free_port()
        argv = [sys.executable, "-m", "corral", "serve", "--port", str(port), "--models", "minilm", "--grace", "2s",
                *flags]
        env = {**os.environ, "CORRAL_HOME": home, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        with server(name, argv, f"http://127.0.0.1:{port}/ready", env=env, timeout=300) as (startup, pid):
            print(f"{name}: ready in {startup:.1f} s", flush=True)
            concurrent = measure_rounds(name, port, pid, LOAD, args, unit="embeddings", kind=args.client)
            single = asyncio.run(run_rounds(port, LOAD, 1, args.sequential, 50_000, args.client))
            print(f"  {name}: one at a time, p50 {single.pct(0.5):.2f} ms, p99 {single.pct(0.99):.2f} ms", flush=True)
            return concurrent, single


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32, help="concurrent requests per round")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sequential", type=int, default=100, help="requests one at a time, for the latency")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw")
    ap.add_argument("--retries-if-busy", type=int, default=1)
    args = ap.parse_args()
    guard_processes()
    print_environment("ray", "torch", "sentence-transformers", "fastapi", "uvicorn")
    print(f"settings: clients={args.clients} rounds={args.rounds} sequential={args.sequential}", flush=True)
    results = [(name, *measure(name, flags, args)) for name, flags in SETUPS]

    print("\n| setup | embeddings/s (concurrent) | p50 ms | p99 ms | one at a time p50 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, concurrent, single in results:
        errors = len(concurrent.errors) + len(concurrent.bad) + len(single.errors) + len(single.bad)
        print(f"| {name} | {concurrent.rate():.1f} | {concurrent.pct(0.5):.1f} | {concurrent.pct(0.99):.1f} | "
              f"{single.pct(0.5):.2f} | {errors} |")
    (_, direct, direct1), (_, one, one1), (_, two, _) = results
    print(f"\nthroughput, 2 replicas / 1 replica: {two.rate() / one.rate():.2f}x  "
          f"(Ray 1 replica / direct: {one.rate() / direct.rate():.2f}x)")
    print(f"latency the proxy adds (p50, one request at a time): {one1.pct(0.5) - direct1.pct(0.5):+.2f} ms "
          f"({one1.pct(0.5):.2f} vs {direct1.pct(0.5):.2f} ms)")
    busy = max(run.other_cpu for _, run, _ in results)
    print(f"(most CPU other processes used during a measurement: {busy:.2f} cores"
          + ("; the machine was busy, rerun when idle)" if busy > BUSY else ")"))


if __name__ == "__main__":
    main()
