"""The concurrent-rounds driver the server-throughput benchmarks share (bench_server_embed.py,
bench_server_tasks.py): ``Load`` (what each request sends and how its answer is checked), ``run_rounds`` (rounds of
N concurrent requests, each round waiting for all of its requests, over bare keep-alive connections or httpx),
``measure_rounds`` (a warm-up round, then the timed rounds under the CPU meter, again while other processes were
busy) and ``batch_metrics`` (inputs per forward pass from corral's Prometheus metrics)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from harness import BUSY, CpuMeter, RawConnection

Post = Callable[[str, bytes, str], Awaitable[tuple[int, bytes]]]  # (path, body, content type) -> (status, body)


@dataclass(frozen=True)
class Load:
    """What request ``i`` sends (``body(i)`` to ``path``) and how its answer is checked: ``check(i, body)`` returns
    the value to keep (round 0's answers are kept for comparisons) or raises ValueError for a malformed answer."""

    path: str
    body: Callable[[int], bytes]
    check: Callable[[int, bytes], Any]
    content_type: str = "application/json"


@dataclass
class Run:
    """One measurement: wall time, per-request latencies, failures, round 0's answers, and what the CPU meter and
    the server's metrics said meanwhile."""

    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # failed requests (transport, HTTP status)
    bad: list[str] = field(default_factory=list)  # answers of the wrong shape
    answers: dict[int, Any] = field(default_factory=dict)  # request index -> checked answer (round 0)
    other_cpu: float = float("nan")
    own_cpu: float = float("nan")
    per_pass: float | None = None  # inputs per forward pass, from the server's metrics

    def rate(self) -> float:
        return len(self.latencies) / self.wall

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


async def _one(post: Post, load: Load, i: int, run: Run, keep: bool) -> None:
    start = time.perf_counter()
    try:
        status, body = await post(load.path, load.body(i), load.content_type)
    except (OSError, ValueError, asyncio.IncompleteReadError, httpx.HTTPError) as e:
        run.errors.append(f"{type(e).__name__}: {e}")
        return
    if status != 200:
        run.errors.append(f"HTTP {status}: {body[:200]!r}")
        return
    run.latencies.append(time.perf_counter() - start)
    try:
        value = load.check(i, body)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        run.bad.append(f"request {i}: {e}: {body[:200]!r}")
        return
    if keep:
        run.answers[i] = value


async def _posters(stack: contextlib.AsyncExitStack, port: int, clients: int, kind: str) -> list[Post]:
    """One way to post per client: a bare keep-alive connection each (``raw``), or one shared httpx.AsyncClient
    with a connection per client (``httpx``: several ms of CPU per request, taken from the servers' cores)."""
    if kind == "raw":
        conns = [RawConnection("127.0.0.1", port) for _ in range(clients)]
        for conn in conns:
            stack.callback(conn.close)
        return [conn.post for conn in conns]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    client = await stack.enter_async_context(httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(120.0, connect=10.0), limits=limits))

    async def post(path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        resp = await client.post(path, content=body, headers={"content-type": content_type})
        return resp.status_code, resp.content

    return [post] * clients


async def run_rounds(port: int, load: Load, clients: int, rounds: int, offset: int, kind: str = "raw") -> Run:
    """``rounds`` rounds of ``clients`` concurrent requests (indices from ``offset``), each round waiting for all
    of its requests."""
    run = Run()
    async with contextlib.AsyncExitStack() as stack:
        posts = await _posters(stack, port, clients, kind)
        start = time.perf_counter()
        for r in range(rounds):
            await asyncio.gather(*(_one(posts[c], load, offset + r * clients + c, run, keep=r == 0)
                                   for c in range(clients)))
        run.wall = time.perf_counter() - start
    return run


def batch_metrics(port: int, metric: str, **labels: str) -> tuple[float, float] | None:
    """(forward passes, inputs) summed over ``metric``'s ``_count`` / ``_sum`` series with these labels, from
    corral's Prometheus metrics; None for a server without them."""
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
    except httpx.HTTPError:
        return None
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    found: dict[str, float] = {}
    for line in resp.text.splitlines() if resp.status_code == 200 else []:
        name, _, rest = line.partition("{")
        name = name.split(" ", 1)[0]
        if name in (f"{metric}_count", f"{metric}_sum") and all(w in rest for w in wanted):
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    if len(found) < 2:
        return None
    return found[f"{metric}_count"], found[f"{metric}_sum"]


def measure_rounds(name: str, port: int, pid: int, load: Load, args: argparse.Namespace, *, unit: str = "requests",
                   metrics: Callable[[], tuple[float, float] | None] = lambda: None, kind: str = "raw") -> Run:
    """A warm-up round, then ``args.rounds`` rounds of ``args.clients``; again (``args.retries_if_busy`` times at
    most) while other processes used more than BUSY cores, keeping the least disturbed attempt."""
    warm = asyncio.run(run_rounds(port, load, args.clients, 1, 10_000, kind))
    if warm.errors or warm.bad:
        raise RuntimeError(f"{name} warm-up failed: {(warm.errors + warm.bad)[0]}")
    best: Run | None = None
    for attempt in range(1 + args.retries_if_busy):
        before = metrics()
        with CpuMeter(pid) as cpu:
            run = asyncio.run(run_rounds(port, load, args.clients, args.rounds, 0, kind))
        run.other_cpu, run.own_cpu = cpu.other, cpu.ours
        after = metrics()
        passes = after[0] - before[0] if before and after else 0
        run.per_pass = (after[1] - before[1]) / passes if before and after and passes else None
        print(f"  {name}: {len(run.latencies)} {unit} in {run.wall:.2f} s = {run.rate():.1f}/s; latency p50 "
              f"{run.pct(0.5):.1f} ms, p99 {run.pct(0.99):.1f} ms; errors {len(run.errors)}, malformed "
              f"{len(run.bad)}; CPU: server+clients {cpu.ours:.2f} cores, other processes {cpu.other:.2f} cores"
              + ("  <-- the machine was busy: numbers are unreliable" if cpu.other > BUSY else "")
              + (f"\n      the server's metrics: {passes:.0f} forward passes, {run.per_pass:.1f} inputs per pass"
                 if run.per_pass else ""), flush=True)
        for e in sorted(set(run.errors))[:5] + run.bad[:5]:
            print(f"      {e}")
        if best is None or run.other_cpu < best.other_cpu:
            best = run
        if run.other_cpu <= BUSY:
            break
        if attempt < args.retries_if_busy:
            print("      other processes were busy: measuring again", flush=True)
    assert best is not None
    return best
