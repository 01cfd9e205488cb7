"""`corral config validate`: every mistake in a config file at once, each with its path
(``aliases.fast[1]: unknown provider 'opneai'``), where :func:`corral.config.load_settings` stops
at the first. Also the checks that need more than the schema: alias targets that name no provider,
model or alias; chains inside chains; a provider named like the owner of a registered ``org/name``
model (its models would be unreachable); referenced environment variables that are unset (a
warning: the server may get them later)."""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from corral.config import BUILTIN_ALIASES, Settings
from corral.targets import Secret

REFERENCE_PREFIXES = ("hf:", "pkg:", "system:", "/", "./", "../", "~")


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate_file(path: Path, data_dir: Path, registered: Collection[str]) -> Report:
    """Every error and warning of the config at ``path``, for a store holding ``registered`` names."""
    report = Report()
    if not path.is_file():
        report.warnings.append(f"{path}: no config file (defaults apply); `corral config init` writes one")
        return report
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        report.errors.append(f"{path}: not valid TOML: {exc}")
        return report
    try:
        settings = Settings(data_dir=data_dir, config_path=path, **raw)
    except ValidationError as exc:
        report.errors.extend(f"{_path(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())
        return report
    check_targets(settings, registered, report)
    return report


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-before[_alias(), AliasSettings]",):
            out += ("." if out else "") + str(part)
    return out


def check_targets(settings: Settings, registered: Collection[str], report: Report) -> None:
    chains = settings.chains()
    names = set(registered) | set(BUILTIN_ALIASES) | set(settings.aliases)
    for alias, table in settings.aliases.items():
        refs = [(f"aliases.{alias}[{i}]" if len(table.targets) > 1 or table.single is None else f"aliases.{alias}", t)
                for i, t in enumerate(table.targets)]
        if table.context_fallback:
            refs.append((f"aliases.{alias}.context_fallback", table.context_fallback))
        for where, ref in refs:
            problem = target_problem(ref, settings, names, chains)
            if problem:
                report.errors.append(f"{where}: {problem}")
    for provider in settings.providers:
        shadowed = sorted(n for n in registered if n.startswith(provider + "/"))
        if shadowed:
            report.errors.append(f"providers.{provider}: the name hides the registered model {shadowed[0]} (a name "
                                 f"{provider}/... goes to the provider); rename the provider, or use hf:{shadowed[0]}")
        secret = settings.providers[provider].api_key
        if isinstance(secret, Secret):
            import os

            if not os.environ.get(secret.variable):
                report.warnings.append(f"providers.{provider}.api_key: {secret.variable} is not set in this "
                                       "environment")


def target_problem(ref: str, settings: Settings, names: set[str], chains: dict[str, Any]) -> str | None:
    """Why ``ref`` cannot be an alias target, or None."""
    if ref in chains:
        return f"{ref!r} is itself a chain; list its targets here instead (chains do not nest)"
    if ref.startswith(REFERENCE_PREFIXES) or ref in names:
        return None
    provider, sep, upstream = ref.partition("/")
    if sep:
        if provider in settings.providers:
            return None if upstream else f"{ref!r} names no model of provider {provider}"
        known = ", ".join(sorted(settings.providers)) or "none configured"
        return f"unknown provider {provider!r} (providers: {known}); for a Hugging Face repo write hf:{ref}"
    return f"unknown model {ref!r}: not registered, not an alias (`corral list`, or write hf:ORG/NAME or pkg:NAME)"
