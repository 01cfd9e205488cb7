"""`corral serve`: the OpenAI-compatible server; `corral logs`: the request log."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
import time
from types import FrameType
from typing import Any

from corral.cli.context import Context, add_load_flags, load_options
from corral.cli.flags import add_setting_flags
from corral.cli.output import print_json, table
from corral.errors import UsageError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API",
                       description="Every setting below can also come from the environment (CORRAL_*) or the "
                                   "config file ([server], [runtime]); flags win, then the environment, then the file.")
    add_setting_flags(p, "server", "runtime")
    add_load_flags(p, threads=False)
    p.add_argument("--ray", action="store_true",
                   help="serve as a Ray Serve deployment: replicas on a Ray cluster behind Serve's HTTP proxy "
                        "(needs corral[ray]; the options below)")
    add_setting_flags(p.add_argument_group("with --ray"), "ray")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("logs", help="the latest requests the server handled")
    p.add_argument("-n", "--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_logs)


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    import uvicorn

    from corral.api.app import ServeOptions, create_app
    from corral.api.guard import ServerState
    from corral.api.http_protocol import BoundedHttpToolsProtocol
    from corral.runtime.runtime import RuntimeOptions, build_runtime

    server = ctx.settings.server
    if not is_loopback(server.host) and not server.api_keys and not server.allow_insecure:
        raise UsageError(
            f"refusing to serve on {server.host} without an API key: anyone who can reach it could use it",
            "pass --api-key KEY (or CORRAL_API_KEYS), or --allow-insecure if the network is trusted")
    if args.ray:
        from corral.cli.scale import serve_on_ray

        return serve_on_ray(args, ctx)
    level = logging.getLevelName(server.log_level.upper())
    logging.basicConfig(stream=sys.stderr, level=max(level, logging.WARNING),  # other libraries: warnings
                        format="corral: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("corral").setLevel(level)
    options = RuntimeOptions.from_settings(ctx.settings, load_options(args, ctx))
    runtime = build_runtime(ctx.settings, ctx.store, options)
    state = ServerState()
    app = create_app(runtime, ServeOptions(host=server.host, port=server.port, api_keys=server.api_keys,
                                           allowed_hosts=server.allowed_hosts, max_body=server.max_body), state)
    config = uvicorn.Config(app, host=server.host, port=server.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on", loop="uvloop",
                            http=BoundedHttpToolsProtocol)  # httptools, with bounded request heads
    draining = DrainingServer(config, state, server.grace, runtime.metrics)
    budget = runtime.registry.budget_bytes
    sys.stderr.write(f"corral serving on http://{server.host}:{server.port} "
                     f"({'API key required' if server.api_keys else 'no API key'}; budget {budget / 1e9:.2f} GB)\n"
                     f"web UI: http://{server.host}:{server.port}/ui/\n")
    sys.stderr.flush()
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvloop: Config alone does not set it
        runner.run(draining.serve())
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
