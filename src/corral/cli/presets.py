"""`corral create NAME --from MODEL [--system TEXT | --system-file F] [sampling defaults]`: a preset
written to the config as ``[aliases.NAME]`` (like ``ollama create`` from a Modelfile); `corral rm`
removes it (:func:`remove_preset`). The model must be one corral knows; the name must be free."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from corral.cli.context import Context
from corral.errors import ConflictError, ModelNotFoundError, UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("create", help="make a preset: a model with a system prompt and sampling defaults",
                       description="Writes [aliases.NAME] to the config file; every door then takes NAME as a "
                                   "model. A request's own values win over the preset's.")
    p.add_argument("name", help="the preset's name")
    p.add_argument("--from", dest="base", required=True, metavar="MODEL",
                   help="the model it runs: a registered model, an alias, PROVIDER/ID or MODEL@MODE")
    system = p.add_mutually_exclusive_group()
    system.add_argument("--system", help="system prompt (used when a conversation has none)")
    system.add_argument("--system-file", type=Path, metavar="FILE", help="read the system prompt from FILE")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    p.add_argument("--json", dest="json_output", action="store_true", help="answer JSON objects (response_format "
                   "json_object)")
    p.add_argument("--json-schema", type=Path, metavar="FILE", help="answer JSON matching the schema in FILE")
    p.add_argument("--force", action="store_true", help="replace an alias of that name in the config")
    p.set_defaults(func=cmd_create)


def _system(args: argparse.Namespace) -> str | None:
    if args.system_file is None:
        return str(args.system) if args.system is not None else None
    try:
        return str(args.system_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --system-file {args.system_file}: {exc}") from None


def _response_format(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.json_schema is None:
        return {"type": "json_object"} if args.json_output else None
    try:
        schema = json.loads(args.json_schema.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--json-schema {args.json_schema} is not a readable JSON file: {exc}") from None
    if not isinstance(schema, dict):
        raise UsageError("--json-schema must hold a JSON object (a schema)")
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def _check_names(args: argparse.Namespace, ctx: Context) -> None:
    from corral.models.refs import check_name
    from corral.models.system import system_entry
    from corral.targets import split_remote

    if "@" in args.name or "/" in args.name:
        raise UsageError(f"a preset's name has no '@' or '/': {args.name!r}", "e.g. corral create coder --from ...")
    check_name(args.name)
    if ctx.store.get(args.name) is not None or system_entry(args.name) is not None:
        raise ConflictError(f"{args.name!r} is a model's name", "choose another name for the preset")
    if args.base == args.name:
        raise UsageError("a preset cannot be made from itself", "name the model it runs with --from")
    if args.base in ctx.settings.aliases or split_remote(args.base, ctx.settings.providers):
        return  # a config alias or a remote model: checked by `corral config validate`
    try:
        ctx.resolver.resolve(args.base, progress=False)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"--from {args.base!r}: {exc.message}", exc.hint) from None


def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    from corral.config import config_file
    from corral.config_edit import add_alias

    _check_names(args, ctx)
    values: dict[str, Any] = {"targets": [args.base]}
    optional = {"system": _system(args), "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
                "max_tokens": args.max_tokens, "seed": args.seed, "stop": args.stop,
                "response_format": _response_format(args)}
    values.update({k: v for k, v in optional.items() if v is not None})
    path = config_file(ctx.config)
    add_alias(path, args.name, values, replace=args.force)
    print(f"created {args.name} ({args.base}) in {path}")
    print(f'try: corral run {args.name} "hello"')
    return 0


def remove_preset(name: str, ctx: Context) -> bool:
    """Remove the config's alias ``name`` when no model is registered under that name (`corral rm`)."""
    from corral.config import config_file
    from corral.config_edit import remove_alias

    if name not in ctx.settings.aliases or ctx.store.get(name) is not None:
        return False
    path = config_file(ctx.config)
    if not remove_alias(path, name):
        return False
    print(f"removed {name} from {path}")
    return True
