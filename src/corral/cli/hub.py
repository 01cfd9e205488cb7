"""search, login, logout: the Hugging Face Hub from the command line (models/hub_search.py, models/hub_auth.py)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from corral.cli.context import Context
from corral.cli.output import human_bytes, human_count, print_json, table
from corral.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("search", help="search the Hugging Face Hub's models; marks those corral can run",
                       description="Lists hub models (id, task, downloads, likes, last modified, gated), whether "
                       "corral can run each (RUNS: the engine, or no) and the memory a default load would take.")
    p.add_argument("query", nargs="?", help="words in the model id")
    p.add_argument("--task", help="the hub's task (pipeline tag), e.g. text-generation, feature-extraction")
    p.add_argument("--library", help="a library or tag, e.g. gguf, transformers, sentence-transformers")
    p.add_argument("--sort", choices=("downloads", "likes", "last_modified", "trending"), default="downloads")
    p.add_argument("--limit", type=int, default=20, help="at most this many models (1-1000, default 20)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("login", help="store a Hugging Face token (huggingface_hub's storage) for gated repos",
                       description="Checks the token with the hub, then stores it where huggingface_hub keeps it "
                       "(under HF_HOME); corral keeps no copy and never prints it. Without --token it is read "
                       "from standard input, or asked for without echo on a terminal.")
    p.add_argument("--token", help="the token (else read from stdin or asked for; a flag may stay in your shell "
                   "history)")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="remove the Hugging Face token huggingface_hub stores")
    p.set_defaults(func=cmd_logout)


def _row(m: Any) -> list[str]:
    memory = f"~{human_bytes(m.memory_bytes)}" if m.memory_bytes else "-"
    return [m.id, m.task or "-", human_count(m.downloads), human_count(m.likes), (m.last_modified or "-")[:10],
            str(m.gated) if m.gated else "no", human_count(m.parameters), m.engine if m.runnable else "no", memory,
            m.note or ""]


def cmd_search(args: argparse.Namespace, ctx: Context) -> int:
    from corral.models.hub_search import SearchQuery, search_hub

    found = search_hub(SearchQuery(args.query, args.task, args.library, args.sort, args.limit))
    if args.json:
        print_json([m.to_json() for m in found])
        return 0
    if not found:
        print("no hub models match")
        return 0
    print(table(["model", "task", "downloads", "likes", "modified", "gated", "params", "runs", "memory", "note"],
                [_row(m) for m in found]))
    print("\nRUNS: the engine corral would run it with; MEMORY: a default load, estimated. "
          "Download one with `corral pull ORG/NAME`.")
    return 0


def _read_token(args: argparse.Namespace) -> str:
    if args.token is not None:
        return str(args.token)
    if sys.stdin.isatty():
        return getpass.getpass("Hugging Face token (input hidden): ")
    return sys.stdin.readline()


def cmd_login(args: argparse.Namespace, ctx: Context) -> int:
    from corral.models.hub_auth import login

    token = _read_token(args)
    if not token.strip():
        raise UsageError("no token given", "create one at https://huggingface.co/settings/tokens, then "
                         "pipe it in or pass --token")
    done = login(token)
    print(f"logged in to {done.endpoint} as {done.user}; huggingface_hub stores the token in {done.stored_at}")
    if done.env_token:
        sys.stderr.write("note: HF_TOKEN is set in the environment and is used instead of the stored token\n")
    return 0


def cmd_logout(args: argparse.Namespace, ctx: Context) -> int:
    import os

    from corral.models.hub_auth import logout

    removed = logout()
    print(f"logged out (removed {removed})" if removed else "not logged in: no stored token")
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        sys.stderr.write("note: HF_TOKEN is still set in the environment; unset it to stop using a token\n")
    return 0
