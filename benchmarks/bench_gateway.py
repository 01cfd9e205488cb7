"""What corral adds as a gateway: `POST /v1/chat/completions` for `up/small` on `corral serve`, whose
config names a local stand-in OpenAI-compatible upstream (tests/gateway/standin_openai.py, in its own
process), vs the same request sent to the upstream directly; and vs LiteLLM's proxy (`litellm
--config`, one worker, retries off) on the same upstream where a Python that runs it is given with
--litellm-python (it is not part of corral's install; without it the script says so and skips it).
Streamed and not, at 1 and 32 concurrent clients (httpx, one AsyncClient per run),
the paths measured in turns, --requests per cell after --warmup. Prints p50 / p99 latency per path
and the added latency over direct (a whole answer: headers to the last byte of the body). Target:
corral adds at most its own door's cost (bench_http_overhead.py) + 1 ms p50, and less than LiteLLM.

    python benchmarks/bench_gateway.py [--requests 400] [--warmup 40] [--concurrency 1,32]
                                       [--litellm-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import free_port, print_environment, server

BODY = {"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def serve_upstream(port: int) -> None:
    from tests.gateway.standin_openai import StandIn, StandInServer

    upstream = StandIn("up", reply="one two three four five six seven eight")
    upstream.server.server_close()
    upstream.server = StandInServer(("127.0.0.1", port), upstream.handler())
    upstream.server.serve_forever()


async def one(client: httpx.AsyncClient, url: str, body: dict[str, object], stream: bool) -> float:
    started = time.perf_counter()
    if stream:
        async with client.stream("POST", url, json={**body, "stream": True}) as response:
            async for _ in response.aiter_bytes():
                pass
            assert response.status_code == 200
    else:
        response = await client.post(url, json=body)
        assert response.status_code == 200, response.text
    return time.perf_counter() - started


async def cell(url: str, model: str, stream: bool, concurrency: int, requests: int, warmup: int) -> list[float]:
    body = {**BODY, "model": model}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for _ in range(warmup):
            await one(client, url, body, stream)
        times: list[float] = []
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                queue.pop()
                times.append(await one(client, url, body, stream))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return times


LITELLM_CONFIG = """model_list:
  - model_name: small
    litellm_params:
      model: openai/small
      api_base: {upstream}
      api_key: none
litellm_settings:
  num_retries: 0
  request_timeout: 60
"""


def start_litellm(stack: ExitStack, python: str | None, upstream_url: str, home: Path) -> str | None:
    """LiteLLM's proxy in front of the same upstream: its chat URL, or None (said why) where not runnable."""
    if python is None:
        print("LiteLLM proxy: not measured (give --litellm-python, a Python where `litellm --config` runs)")
        return None
    port = free_port()
    (home / "litellm.yaml").write_text(LITELLM_CONFIG.format(upstream=upstream_url))
    argv = [python, "-m", "litellm.proxy.proxy_cli", "--config", str(home / "litellm.yaml"), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]
    # no master key, as corral runs here (127.0.0.1, no keys); its cost map from the package, not the network
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
    stack.enter_context(server("litellm", argv, f"http://127.0.0.1:{port}/health/liveliness", env=env))
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--litellm-python", help="a Python with litellm's proxy installed, to measure it beside")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    print_environment("openai", "httpx", "uvicorn")
    home = Path(tempfile.mkdtemp(prefix="corral-bench-gw-"))
    up_port, corral_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    (home / "config.toml").write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{upstream_url}"\n'
                                      "retries = { max = 0, backoff = 0 }\n")
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": str(home / "config.toml")}
    paths = {"direct": (f"{upstream_url}/chat/completions", "small")}
    with ExitStack() as stack:
        stack.enter_context(server("upstream", [sys.executable, __file__, "--serve-upstream", str(up_port)],
                                   f"{upstream_url}/models"))
        stack.enter_context(server("corral", [sys.executable, "-m", "corral", "serve", "--port", str(corral_port)],
                                   f"http://127.0.0.1:{corral_port}/ready", env=env))
        paths["corral"] = (f"http://127.0.0.1:{corral_port}/v1/chat/completions", "up/small")
        if (litellm := start_litellm(stack, args.litellm_python, upstream_url, home)) is not None:
            paths["litellm"] = (litellm, "small")
        rows = []
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for stream in (False, True):
                measured = {name: asyncio.run(cell(url, model, stream, concurrency, args.requests, args.warmup))
                            for name, (url, model) in paths.items()}
                direct = measured["direct"]
                for name, times in measured.items():
                    rows.append((concurrency, "stream" if stream else "whole", name, pct(times, 0.5), pct(times, 0.99),
                                 statistics.mean(times) * 1000, pct(times, 0.5) - pct(direct, 0.5),
                                 pct(times, 0.99) - pct(direct, 0.99)))
    print("\n| clients | answer | path | p50 ms | p99 ms | mean ms | added p50 ms | added p99 ms |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for c, kind, name, p50, p99, mean, add50, add99 in rows:
        print(f"| {c} | {kind} | {name} | {p50:.2f} | {p99:.2f} | {mean:.2f} | {add50:+.2f} | {add99:+.2f} |")
    print(json.dumps({"requests": args.requests, "warmup": args.warmup}))
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
