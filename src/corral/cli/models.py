"""pull, list, rm, inspect."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from corral.cli.context import Context, add_trust_flags
from corral.cli.output import human_bytes, human_count, print_json, table
from corral.errors import BadReferenceError, ModelNotFoundError, UsageError
from corral.models.info import ModelInfo
from corral.models.inspect import inspect_path
from corral.models.refs import REPO_ID, parse_ref
from corral.models.store import Entry
from corral.models.system import SYSTEM_MODELS, system_entry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pull", help="download a Hugging Face model, or register a local or packaged one",
                       description="REF: hf:ORG/NAME[@REVISION], ORG/NAME, a folder, a .gguf file, or pkg:PACKAGE")
    p.add_argument("ref")
    p.add_argument("--name", help="register under this name")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("list", aliases=["ls"], help="show registered models")
    p.add_argument("--json", action="store_true")
    p.add_argument("--aliases", "-a", action="store_true", help="also list aliases (built-in and from the config)")
    p.add_argument("--remote", metavar="PROVIDER", help="list the models a configured provider has (a free call)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("rm", help="remove a registration, or a preset from the config")
    p.add_argument("name")
    p.add_argument("--delete-files", action="store_true",
                   help="also delete the files corral downloaded or joined for it (never local or packaged files)")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("inspect", help="what a model is and needs, without loading its weights")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true")
    add_trust_flags(p)
    p.set_defaults(func=cmd_inspect)


def _pull_ref(text: str) -> str:
    """`pull ORG/NAME` means the Hugging Face repo, unless a local folder has that name."""
    ref = parse_ref(text)
    if ref.kind == "name" and REPO_ID.match(ref.value):
        if Path(ref.value).exists():
            raise BadReferenceError(
                f"{ref.value!r} is ambiguous: both a local folder and a Hugging Face repo id",
                f"write ./{ref.value} for the folder or hf:{ref.value} for the repo")
        return f"hf:{text}"
    return text


def cmd_pull(args: argparse.Namespace, ctx: Context) -> int:
    text = _pull_ref(args.ref)
    ref = parse_ref(text)
    if ref.kind == "name":
        target = ctx.settings.all_aliases().get(ref.value)
        if target is None and ref.value in SYSTEM_MODELS and system_entry(ref.value) is not None:
            print(f"{ref.value} is built in (a program on this system); there is nothing to register")
            return 0
        if target is None:
            raise ModelNotFoundError(f"{ref.value!r} is not an alias, path, pkg: or hf: reference",
                                     "write hf:ORG/NAME for a Hugging Face repo")
        ref, args.name = parse_ref(target), args.name or ref.value
    entry = ctx.resolver.register(ref, name=args.name, explicit_name=bool(args.name),
                                  progress=not args.quiet)
    tasks = ", ".join(entry.info.tasks) or "none detected"
    print(f"registered {entry.name} ({entry.info.format}, {human_bytes(entry.info.size_bytes)}; tasks: {tasks})")
    return 0


def _memory(e: Entry, measured: dict[str, int]) -> str:
    """Measured at the last load when the server has loaded it; else the estimate, marked with ~."""
    if e.name in measured:
        return human_bytes(measured[e.name])
    return f"~{human_bytes(e.info.memory.cpu_bytes)}" if e.info.memory else "-"


def _row(e: Entry, measured: dict[str, int]) -> list[str]:
    i = e.info
    return [e.name, ",".join(i.tasks) or "-", i.format, human_bytes(i.size_bytes),
            human_count(i.parameters), i.quantization or i.dtype or "-", _memory(e, measured), e.source]


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    from corral.models.catalog import alias_rows, model_rows, remote_rows
    from corral.models.system import every_entry

    if args.remote:
        return _list_remote(args, ctx)
    entries = every_entry(ctx.store)  # registered, then built-in system models present (espeak-ng)
    measured = ctx.store.measurements()
    remote = remote_rows(ctx.settings)
    every_alias = alias_rows(ctx.settings, ctx.store, {e.name for e in entries})
    presets = [a for a in every_alias if "preset" in a]  # listed always; other aliases with --aliases
    aliases = [a for a in every_alias if "preset" not in a] if args.aliases else []
    if args.json:
        print_json(model_rows(ctx.store) + remote + presets + aliases)
        return 0
    if not entries and not aliases and not remote and not presets:
        print("no models registered yet; try `corral pull smollm2` or `corral pull ./my-model`")
        return 0
    blocks = []
    if entries:
        blocks.append(table(["name", "tasks", "format", "size", "params", "quant", "memory", "source"],
                            [_row(e, measured) for e in entries]))
    if remote:
        blocks.append(table(["remote model", "provider", "type"], [[r["name"], r["provider"], r["type"]]
                                                                  for r in remote]))
    if presets:
        blocks.append(table(["preset", "model", "defaults"], [[p["name"], " -> ".join(p["targets"]),
                                                               _defaults(p["preset"])] for p in presets]))
    if aliases:
        blocks.append(table(["alias", "points to", "registered as"],
                            [[a["name"], " -> ".join(a["targets"]), a["registered_as"] or "-"] for a in aliases]))
    print("\n\n".join(blocks))
    return 0


def _defaults(preset: dict[str, Any]) -> str:
    """A preset's defaults in one cell: the system prompt's start, then the sampling values."""
    system = preset.get("system")
    shown = [f"system: {system[:40]!r}" + ("..." if len(system) > 40 else "")] if system else []
    shown += [f"{k}={v}" for k, v in preset.items() if k not in ("system", "json_schema")]
    return ", ".join(shown + (["json"] if "json_schema" in preset else [])) or "-"


def _list_remote(args: argparse.Namespace, ctx: Context) -> int:
    """The provider's own model list, as `PROVIDER/ID` names corral takes."""
    import asyncio

    from corral.runtime.providers import ProviderPool

    if args.remote not in ctx.settings.providers:
        known = ", ".join(sorted(ctx.settings.providers)) or "none configured"
        raise UsageError(f"no provider named {args.remote!r} (providers: {known})", "see `corral config show`")

    async def fetch() -> list[str]:
        pool = ProviderPool(ctx.settings.providers)
        try:
            return await pool.get(args.remote).models()
        finally:
            await pool.aclose()

    names = [f"{args.remote}/{m}" for m in sorted(asyncio.run(fetch()))]
    if args.json:
        print_json(names)
    else:
        print("\n".join(names) if names else f"provider {args.remote} lists no models")
    return 0


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    from corral.cli.presets import remove_preset
    from corral.models.removal import remove_model

    if remove_preset(args.name, ctx):
        return 0
    removed = remove_model(ctx.store, args.name, delete_files=args.delete_files)
    print(f"removed {removed.name}")
    if removed.deleted:
        print(f"deleted {removed.deleted}")
    if removed.note:
        print(removed.note)
    return 0


def _inspect_target(text: str, ctx: Context) -> tuple[str, Path]:
    ref = parse_ref(text)
    if ref.kind == "name":
        entry = ctx.store.get(ref.value)
        if entry is None and ref.value in ctx.settings.all_aliases():
            return _inspect_target(ctx.settings.all_aliases()[ref.value], ctx)
        if entry is None:
            entry = ctx.resolve(ref.value)  # raises a clear not-found error
        return entry.name, entry.path
    if ref.kind == "hf":
        entry = ctx.store.find_by_source(str(ref))
        if entry is None:
            raise ModelNotFoundError(f"{ref} has not been downloaded", f"run `corral pull {ref}` first")
        return entry.name, entry.path
    if ref.kind == "package":
        from corral.models.packaged import find_packaged_model
        from corral.models.parts import find_split

        entry = ctx.store.find_by_source(str(ref))
        if entry is not None:
            return entry.name, entry.path
        path = find_packaged_model(ref.value)
        if path.is_dir() and find_split(path, ref.value) is not None:
            raise UsageError(f"{ref} ships its model in parts, which corral joins when it registers it",
                             f"run `corral pull {ref}` first")
        return str(ref), path
    return ref.value, Path(ref.value)


def _safety_line(info: ModelInfo, args: argparse.Namespace) -> str:
    problems = []
    if info.needs_pickle:
        problems.append("pickle weights: refused unless --allow-pickle"
                        + (" (allowed)" if args.allow_pickle else ""))
    if info.needs_remote_code:
        problems.append("custom code: refused unless --trust-remote-code"
                        + (" (allowed)" if args.trust_remote_code else ""))
    stored = {"spacy": "spaCy's own serialization", "ctranslate2": "CTranslate2's format",
              "sphinx": "CMU Sphinx model files", "onnx": "ONNX", "system": "a program on this system"}.get(
        info.format, "safetensors/GGUF")
    return "; ".join(problems) or f"ok ({stored}, no custom code)"


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    from corral.engines.table import tasks_served
    from corral.protocols.routes import routes_for

    name, path = _inspect_target(args.ref, ctx)
    info = inspect_path(path)
    routes = routes_for(info.tasks, tasks_served(info.engine, info.tasks))
    if args.json:
        print_json({"name": name, **info.to_dict(), "routes": routes})
        return 0
    needs = ", ".join(f"{r.package} ({'installed' if r.installed else 'missing'})" for r in info.requirements)
    mem = info.memory
    memory = "-"
    if mem:
        memory = f"CPU ~{human_bytes(mem.cpu_bytes)}, GPU ~{human_bytes(mem.gpu_bytes)}"
        if mem.context_length:
            memory += f" (with a {mem.context_length}-token context)"
    rows = [
        ("model", name), ("path", info.path), ("format", info.format),
        ("architecture", info.architecture or "-"), ("tasks", ", ".join(info.tasks) or "-"),
        ("engine", info.engine or "-"), ("needs", needs or "-"),
        ("parameters", f"{human_count(info.parameters)} ({info.parameters})" if info.parameters else "-"),
        ("dtype", info.dtype or "-"), ("quantization", info.quantization or "-"),
        ("context length", str(info.context_length or "-")), ("weights", human_bytes(info.size_bytes)),
        ("memory", memory), ("chat template", "yes" if info.chat_template else "no"),
        ("safety", _safety_line(info, args)), ("read from", ", ".join(info.sources) or "-"),
    ] + [("served", f"{task}: " + ("; ".join(where) or "not yet (corral cannot run it)"))
         for task, where in routes.items()] + [("note", n) for n in info.notes]
    width = max(len(k) for k, _ in rows)
    sys.stdout.write("".join(f"{k.ljust(width)}  {v}\n" for k, v in rows))
    return 0
