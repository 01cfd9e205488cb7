"""What a user can name, as JSON rows every door lists the same way (`corral list --json`, the
sidecar's `models/list`): registered models with their inspection and measured memory, then the
built-in system models present (espeak-ng), the remote models the config names, and aliases not
shadowed by a model, with the model each one resolved to or the chain it tries (and, for a preset,
its defaults under ``preset``)."""

from __future__ import annotations

from typing import Any

from corral.config import Settings
from corral.models.store import Store
from corral.models.system import every_entry
from corral.presets import Preset
from corral.targets import split_remote


def model_rows(store: Store) -> list[dict[str, Any]]:
    measured = store.measurements()
    return [{"kind": "model", "name": e.name, "source": e.source, "source_kind": e.source_kind,
             "path": str(e.path), "owned": e.owned, "created_at": e.created_at,
             "measured_memory_bytes": measured.get(e.name), **e.info.to_dict()} for e in every_entry(store)]


def alias_rows(settings: Settings, store: Store, registered: set[str]) -> list[dict[str, Any]]:
    """Aliases not shadowed by a model: one target (with the model it resolved to), or a chain (its
    targets in order, ``alias_of`` the first)."""
    out = []
    singles = settings.all_aliases()
    for name in sorted({*singles, *settings.chains()}):
        if name in registered:
            continue
        targets = [singles[name]] if name in singles else settings.chains()[name].targets
        entry = store.find_by_source(targets[0]) or store.get(targets[0])
        row: dict[str, Any] = {"kind": "alias", "name": name, "alias_of": targets[0], "targets": targets,
                               "registered_as": entry.name if entry else None}
        preset = Preset.of_alias(name, settings.aliases[name]) if name in settings.aliases else None
        if preset is not None:
            row["preset"] = {"system": preset.system, **preset.sampling,
                             **({"json_schema": preset.json_schema} if preset.json_schema else {})}
        out.append(row)
    return out


def remote_rows(settings: Settings) -> list[dict[str, Any]]:
    """The remote models the config names (in alias targets), with their provider and its type."""
    names = sorted({ref for alias in settings.aliases.values()
                    for ref in (*alias.targets, *([alias.context_fallback] if alias.context_fallback else []))
                    if split_remote(ref, settings.providers)})
    rows = []
    for name in names:
        provider, upstream = split_remote(name, settings.providers) or ("", "")
        rows.append({"kind": "remote", "name": name, "provider": provider, "upstream": upstream,
                     "type": settings.providers[provider].type})
    return rows
