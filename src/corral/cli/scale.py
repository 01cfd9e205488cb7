"""`corral serve --ray` (the server as a Ray Serve deployment) and `corral ray status`. Ray is
imported only here, inside the commands (the extra ``corral[ray]``)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from corral.cli.context import Context, load_options
from corral.cli.output import human_bytes, print_json, table


def register(sub: Any) -> None:
    p = sub.add_parser("ray", help="the Ray cluster `corral serve --ray` runs on")
    commands = p.add_subparsers(dest="ray_command", metavar="COMMAND", required=True)
    s = commands.add_parser("status", help="the replicas of `corral serve --ray`: state, node, models, memory")
    s.add_argument("--ray-address", help="the cluster (default: [ray] address, CORRAL_RAY_ADDRESS, else auto: the "
                                         "one running on this machine)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as SIGINT does, so both stop the deployment the same way."""
    def interrupt(sig: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_on_ray(args: argparse.Namespace, ctx: Context) -> int:
    from corral.scale.cluster import deploy
    from corral.scale.plan import plan_scale, replica_spec

    settings = ctx.settings
    plan = plan_scale(settings)
    spec = replica_spec(settings, load_options(args, ctx))
    server = settings.server
    if plan.address is None:  # a local cluster shares this store: an unknown model fails here, before Ray starts
        for name in settings.runtime.models:
            ctx.resolve(name)
    with sigterm_interrupts():
        try:
            deployment = deploy(plan, spec)
        except KeyboardInterrupt:
            return 0
        where = f"a local Ray cluster ({plan.local_cpus} CPUs)" if plan.address is None else f"Ray at {plan.address}"
        count = (f"{plan.min_replicas}-{plan.max_replicas} replicas (autoscaling)" if plan.autoscaling
                 else f"{plan.max_replicas} replica(s)")
        sys.stderr.write(f"corral serving on http://{server.host}:{server.port} with {count} on {where} "
                         f"({'API key required' if server.api_keys else 'no API key'})\n"
                         f"replicas: corral ray status\n")
        sys.stderr.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.stderr.write("corral: stopping the replicas\n")
        finally:
            deployment.stop()
    return 0


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    from corral.scale.cluster import cluster_status

    report = cluster_status(args.ray_address or ctx.settings.ray.address or "auto")
    if args.json:
        print_json(report)
        return 0
    app = report["application"]
    if app is None:
        print("no corral application on this Ray cluster (start one with `corral serve --ray`)")
    else:
        for name, d in app["deployments"].items():
            states = ", ".join(f"{n} {state}" for state, n in d["replicas"].items()) or "no replicas"
            print(f"application {app['status'].lower()}; deployment {name}: {d['status'].lower()} ({states})")
    rows = [[r["replica"], r["node"], str(r["pid"]), human_bytes(r["rss_bytes"]),
             ", ".join(m["name"] for m in r["models"]) or "-",
             ", ".join(human_bytes(m["memory"]["measured_bytes"]) for m in r["models"]) or "-",
             f"{time.time() - r['seen']:.0f}s ago"] for r in report["replicas"]]
    if rows:
        print(table(["replica", "node", "pid", "memory", "models", "model memory", "reported"], rows))
    return 0
