"""`corral health`: every configured target, checked without spending a token (`--deep`: one tiny
request each, and it says so); exit 1 when a required alias has no target up."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from corral.cli.context import Context
from corral.cli.output import print_json, table


def register(sub: Any) -> None:
    p = sub.add_parser("health", help="check every configured target (remote and local) without spending tokens")
    p.add_argument("--deep", action="store_true", help="also send one one-token request to each target (billed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_health)


def cmd_health(args: argparse.Namespace, ctx: Context) -> int:
    from corral.runtime.health import check
    from corral.runtime.runtime import build_runtime

    async def run() -> dict[str, Any]:
        async with build_runtime(ctx.settings, ctx.store) as runtime:
            return await check(runtime, deep=args.deep)

    report = asyncio.run(run())
    if args.json:
        print_json(report)
    else:
        print(table(["target", "kind", "up", "ms", "key", "model", "error"],
                    [[t["target"], t["kind"], _up(t["up"]), _ms(t["latency_ms"]),
                      _flag(t["authenticated"]), _flag(t["model_present"]), t["error"] or ""]
                     for t in report["targets"]]))
        if report["aliases"]:
            print("\n" + table(["alias", "up", "required", "up targets"],
                               [[a["alias"], _up(a["up"]), "yes" if a["required"] else "no",
                                 ", ".join(a["up_targets"]) or "-"] for a in report["aliases"]]))
        if report["deep"]:
            print("\n(--deep: one one-token request was sent to each target that was up)")
    return 0 if report["ok"] else 1


def _up(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "NO"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _flag(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"
