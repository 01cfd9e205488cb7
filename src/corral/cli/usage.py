"""`corral usage`: the ledger summed per day, name asked for and target: calls, attempts, tokens,
compute seconds and cost (with where each price came from), local and remote in one table."""

from __future__ import annotations

import argparse
import calendar
import re
import time
from typing import Any

from corral.cli.context import Context
from corral.cli.output import print_json, table
from corral.errors import UsageError

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: Any) -> None:
    p = sub.add_parser("usage", help="what every call cost, local and remote, per day, model and target")
    p.add_argument("--since", help="7d, 24h, 30m, or a date (YYYY-MM-DD, UTC); default: everything")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_usage)


def since_seconds(text: str | None, now: float) -> float | None:
    """Unix seconds from ``--since``; a UsageError saying what to write otherwise."""
    if not text:
        return None
    if m := _AGO.match(text.strip()):
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(calendar.timegm(time.strptime(text.strip(), "%Y-%m-%d")))
    except ValueError:
        raise UsageError(f"--since {text!r}: write a span (7d, 24h, 30m) or a date (2026-12-01)") from None


def cmd_usage(args: argparse.Namespace, ctx: Context) -> int:
    from corral.runtime.requestlog import ledger

    since = since_seconds(args.since, time.time())
    rows = ledger(ctx.settings.data_dir / "requests.db", since)
    total = sum(r["cost_usd"] for r in rows)
    if args.json:
        print_json({"since": since, "rows": rows, "total_cost_usd": total})
        return 0
    if not rows:
        print("no calls logged" + (" since then" if since else " yet"))
        return 0
    print(table(["day", "model", "target", "calls", "errors", "attempts", "in", "out", "seconds", "cost $", "price"],
                [[r["day"], r["name"] or "-", r["target"] or "-", str(r["requests"]), str(r["errors"]),
                  str(r["attempts"]), str(r["prompt_tokens"]), str(r["completion_tokens"]), f"{r['seconds']:.1f}",
                  f"{r['cost_usd']:.6f}", r["price_sources"]] for r in rows]))
    print(f"\ntotal: ${total:.6f} over {sum(r['requests'] for r in rows)} calls")
    return 0
