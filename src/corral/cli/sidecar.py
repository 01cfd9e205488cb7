"""`corral sidecar`: the stdio door (JSON-RPC 2.0 over NDJSON) for an app that starts corral as
its child; the protocol is in README.md and ``corral.sidecar``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any

from corral.cli.context import Context, add_load_flags, load_options
from corral.cli.flags import add_setting_flags
from corral.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("sidecar", help="serve JSON-RPC 2.0 over stdin/stdout (NDJSON), for desktop and editor apps",
                       description="stdout carries only protocol lines; logs go to stderr. Every [runtime] setting "
                                   "can also come from the environment (CORRAL_*) or the config file.")
    add_setting_flags(p, "runtime")
    add_load_flags(p, threads=False)
    p.add_argument("--max-line-bytes", type=int, default=16 * 1024 * 1024, metavar="N",
                   help="refuse a message longer than this (default 16 MiB); the session goes on")
    p.add_argument("--allow-paths", action="store_true",
                   help="let model references be file or folder paths (off: names, aliases, hf: and pkg: only)")
    p.set_defaults(func=cmd_sidecar)


def cmd_sidecar(args: argparse.Namespace, ctx: Context) -> int:
    from corral.runtime.runtime import RuntimeOptions, build_runtime
    from corral.sidecar.server import run_sidecar

    if args.max_line_bytes < 1024:
        raise UsageError("--max-line-bytes must be at least 1024")
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="corral sidecar: %(levelname)s %(message)s")
    options = RuntimeOptions.from_settings(ctx.settings, load_options(args, ctx))
    runtime = build_runtime(ctx.settings, ctx.store, dataclasses.replace(options, allow_paths=args.allow_paths))
    return run_sidecar(runtime, max_line=args.max_line_bytes)
