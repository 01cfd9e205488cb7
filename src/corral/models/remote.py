"""Entries for names the router serves (a remote model ``PROVIDER/UPSTREAM_ID``, an alias chain, an
alias for a remote model), so the CLI and the catalogue treat them like registered models: the
tasks are those of the chain's first target (a provider's by its wire format; a local model's from
its manifest entry). Nothing is written to the manifest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from corral.config import Settings
from corral.engines.remote.presets import ANTHROPIC, LITELLM, OLLAMA, OPENAI, PRESETS
from corral.models.info import ModelInfo
from corral.models.store import Entry
from corral.targets import split_remote
from corral.tasks import Task

SOURCE_KIND = "remote"
ENGINE = "remote"  # engines.table.tasks_served takes such an entry's tasks as they are
API_TASKS: dict[str, tuple[Task, ...]] = {OPENAI: (Task.CHAT, Task.COMPLETE, Task.EMBED), ANTHROPIC: (Task.CHAT,),
                                          OLLAMA: (Task.CHAT, Task.COMPLETE, Task.EMBED),
                                          LITELLM: (Task.CHAT, Task.COMPLETE, Task.EMBED)}


def routed_targets(settings: Settings, name: str) -> list[str] | None:
    """The targets the router tries for ``name``, or None when the dispatcher serves it directly."""
    alias = settings.aliases.get(name)
    if alias is not None and (alias.single is None or split_remote(alias.single, settings.providers)):
        return list(alias.targets)
    return [name] if split_remote(name, settings.providers) else None


def remote_entry(settings: Settings, name: str, local: Callable[[str], Entry]) -> Entry | None:
    """A manifest-like entry for a routed ``name``, or None; ``local`` resolves a local target."""
    targets = routed_targets(settings, name)
    if targets is None:
        return None
    first = targets[0]
    remote = split_remote(first, settings.providers)
    if remote is not None:
        provider = settings.providers[remote[0]]
        tasks: list[str] = [t.value for t in API_TASKS[PRESETS[provider.type].api]]
        architecture = f"{provider.type} provider {remote[0]}"
    else:
        tasks, architecture = list(local(first).info.tasks), f"local model {first}"
    info = ModelInfo(path="", format=SOURCE_KIND, architecture=architecture, engine=ENGINE, tasks=tasks)
    return Entry(name, " -> ".join(targets), SOURCE_KIND, Path(), False, info, 0.0)
