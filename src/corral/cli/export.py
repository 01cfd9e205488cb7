"""export: a standalone, pinned deployment of one model (serve.py, requirements, Dockerfiles, README)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corral.cli.context import Context, add_trust_flags, trust_from
from corral.cli.output import print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="write a standalone server + Dockerfile for one model (no corral inside)",
                       description="MODEL: a registered name, hf:ORG/NAME[@REV], a folder, a .gguf file or pkg:NAME")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write (new, or --force)")
    p.add_argument("--bundle", action="store_true",
                   help="copy the model's files into the export (local models always are)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    add_trust_flags(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace, ctx: Context) -> int:
    from corral.export.plan import plan_export
    from corral.export.render import write_export

    entry = ctx.resolve(args.model)
    plan = plan_export(entry, bundle=args.bundle, trust=trust_from(args))
    written = write_export(plan, Path(args.output), force=args.force)
    if args.json:
        print_json({"model": entry.name, "folder": str(written.folder), "files": written.files,
                    "tasks": list(plan.tasks), "source": plan.source.kind, "pins": len(plan.pins)})
        return 0
    sys.stdout.write(f"exported {entry.name} ({', '.join(plan.tasks)}) to {written.folder}\n")
    for name in written.files:
        sys.stdout.write(f"  {name}\n")
    sys.stdout.write(f"try it: cd {written.folder} && python serve.py --selftest\n")
    return 0
