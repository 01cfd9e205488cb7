"""`corral serve`: the OpenAI-compatible server; `corral logs`: the request log."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import re
import signal
import sys
import time
from dataclasses import replace
from types import FrameType
from typing import Any

from corral.cli.context import Context, add_load_flags, load_options
from corral.cli.output import print_json, table
from corral.errors import UsageError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m or (m.group(2) or "").lower() not in _UNITS:
        raise UsageError(f"cannot read the size {text!r}", "write e.g. 8GB, 512MB or 2GiB")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parse_duration(text: str) -> float:
    m = re.match(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", text)
    if not m:
        raise UsageError(f"cannot read the duration {text!r}", "write e.g. 30s, 5m, 1h, 0 or -1 (forever)")
    value = float(m.group(1))
    return -1.0 if value < 0 else value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--models", action="append", default=[], help="models to load at start (repeatable, or a,b)")
    p.add_argument("--max-loaded", type=int, default=3, help="most models loaded at once (default 3)")
    p.add_argument("--memory-budget", help="memory models may use, e.g. 8GB (default: 70%% of what is free)")
    p.add_argument("--keep-alive", default="5m", help="unload a model this long after its last use (-1: never)")
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait per model before 429")
    p.add_argument("--api-key", action="append", default=[], help="require this bearer key (repeatable; "
                   "also CORRAL_API_KEYS=k1,k2)")
    p.add_argument("--allowed-host", action="append", default=[],
                   help="a Host/Origin name to accept besides loopback names ('*' accepts any)")
    p.add_argument("--allow-insecure", action="store_true",
                   help="allow binding a non-loopback address without an API key")
    p.add_argument("--parallel", type=int, default=8,
                   help="GGUF requests decoded together per model, each with its own --ctx (default 8)")
    p.add_argument("--log-prompts", action="store_true", help="store prompt text in the request log")
    p.add_argument("--grace", default="30s", help="how long SIGTERM waits for requests in flight")
    add_load_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("logs", help="the latest requests the server handled")
    p.add_argument("-n", "--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_logs)


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    import uvicorn

    from corral.api.app import ServeOptions, create_app
    from corral.api.guard import ServerState
    from corral.runtime.runtime import RuntimeOptions, build_runtime

    keys = [*args.api_key, *filter(None, (k.strip() for k in os.environ.get("CORRAL_API_KEYS", "").split(",")))]
    if not is_loopback(args.host) and not keys and not args.allow_insecure:
        raise UsageError(
            f"refusing to serve on {args.host} without an API key: anyone who can reach it could use it",
            "pass --api-key KEY (or CORRAL_API_KEYS), or --allow-insecure if the network is trusted")
    if args.max_loaded < 1 or args.max_queue < 0 or not 1 <= args.parallel <= 64:
        raise UsageError("--max-loaded must be at least 1, --max-queue at least 0, --parallel 1 to 64")
    models = tuple(m.strip() for group in args.models for m in group.split(",") if m.strip())
    runtime = build_runtime(ctx.settings, ctx.store, RuntimeOptions(
        load=replace(load_options(args, ctx), parallel=args.parallel),
        budget_bytes=parse_size(args.memory_budget) if args.memory_budget else None,
        max_loaded=args.max_loaded, keep_alive=parse_duration(args.keep_alive), max_queue=args.max_queue,
        log_prompts=args.log_prompts, preload=models))
    state = ServerState()
    app = create_app(runtime, ServeOptions(host=args.host, port=args.port, api_keys=keys,
                                           allowed_hosts=args.allowed_host), state)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on", loop="uvloop", http="httptools")
    server = DrainingServer(config, state, parse_duration(args.grace), runtime.metrics)
    budget = runtime.registry.budget_bytes
    sys.stderr.write(f"corral serving on http://{args.host}:{args.port} "
                     f"({'API key required' if keys else 'no API key'}; budget {budget / 1e9:.2f} GB)\n")
    sys.stderr.flush()
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvloop: Config alone does not set it
        runner.run(server.serve())
    return 0


class DrainingServer:
    """uvicorn, with SIGTERM/SIGINT draining: not ready, new requests 503, in-flight ones finish
    within the grace period, then a clean exit (status 0)."""

    def __init__(self, config: Any, state: Any, grace: float, metrics: Any) -> None:
        import uvicorn

        self.state, self.grace, self.metrics = state, grace, metrics
        outer = self

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                outer.on_signal(sig)

        self.server = _Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None

    def on_signal(self, sig: int) -> None:
        if self.state.draining or (sig == signal.SIGINT and self.server.should_exit):
            self.server.should_exit = self.server.force_exit = True  # a second signal: stop now
            return
        self.state.draining = True
        self.metrics.draining.set(1)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        deadline = time.monotonic() + max(0.0, self.grace)
        while self.state.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.server.should_exit = True

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()


def cmd_logs(args: argparse.Namespace, ctx: Context) -> int:
    from corral.runtime.requestlog import latest

    rows = latest(ctx.settings.data_dir / "requests.db", args.limit)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no requests logged yet")
        return 0

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.0f}" if isinstance(v, float) else str(v)

    print(table(["time", "model", "door", "task", "status", "in", "out", "ttft ms", "total ms", "client"],
                [[time.strftime("%H:%M:%S", time.localtime(r["ts"])), fmt(r["model"]), fmt(r["door"]), fmt(r["task"]),
                  fmt(r["status"]), fmt(r["prompt_tokens"]), fmt(r["completion_tokens"]), fmt(r["ttft_ms"]),
                  fmt(r["total_ms"]), fmt(r["client"])] for r in rows]))
    return 0
