"""Entry point: parse arguments, run one command, turn errors into one clear line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from corral import __version__
from corral.errors import CorralError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message}\nhint: see `{self.prog} --help`\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from corral.cli import (
        batch,
        compare,
        config,
        export,
        generate,
        health,
        hub,
        models,
        presets,
        query,
        scale,
        serve,
        sidecar,
        usage,
    )

    parser = _Parser(prog="corral", description="One runtime for every model, local or remote.")
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    parser.add_argument("--config", metavar="FILE", help="the config file (default: CORRAL_CONFIG, else "
                        "$XDG_CONFIG_HOME/corral/config.toml)")
    sub: Any = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    models.register(sub)
    presets.register(sub)
    generate.register(sub)
    query.register(sub)
    batch.register(sub)
    compare.register(sub)
    serve.register(sub)
    scale.register(sub)
    sidecar.register(sub)
    export.register(sub)
    config.register(sub)
    usage.register(sub)
    health.register(sub)
    hub.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from corral.cli.context import Context
    from corral.cli.flags import setting_flags
    from corral.cli.output import print_error

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse cannot take a positional after options (`run MODEL --seed 1 "prompt"`)
        if getattr(args, "prompt", "set") is None and not any(x.startswith("-") for x in extra):
            args.prompt = " ".join(extra)
        elif isinstance(getattr(args, "texts", None), list) and not any(x.startswith("-") for x in extra):
            args.texts += extra  # `embed MODEL --image photo.jpg "a caption"`
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args, Context(args.config, setting_flags(args))))
    except CorralError as exc:
        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the last line of defence: one line, never a trace
        if os.environ.get("CORRAL_DEBUG"):
            raise
        sys.stderr.write(f"error: internal error: {type(exc).__name__}: {exc}\n"
                         "hint: rerun with CORRAL_DEBUG=1 for details and report it\n")
        return 70
