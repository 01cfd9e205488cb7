"""What a user can name, as JSON rows every door lists the same way (`corral list --json`, the
sidecar's `models/list`): registered models with their inspection and measured memory, then the
built-in system models present (espeak-ng), and aliases not shadowed by a model, with the model
each one resolved to."""

from __future__ import annotations

from typing import Any

from corral.config import Settings
from corral.models.store import Store
from corral.models.system import every_entry


def model_rows(store: Store) -> list[dict[str, Any]]:
    measured = store.measurements()
    return [{"kind": "model", "name": e.name, "source": e.source, "source_kind": e.source_kind,
             "path": str(e.path), "owned": e.owned, "created_at": e.created_at,
             "measured_memory_bytes": measured.get(e.name), **e.info.to_dict()} for e in every_entry(store)]


def alias_rows(settings: Settings, store: Store, registered: set[str]) -> list[dict[str, Any]]:
    out = []
    for name, target in sorted(settings.all_aliases().items()):
        if name in registered:
            continue
        entry = store.find_by_source(target) or store.get(target)
        out.append({"kind": "alias", "name": name, "alias_of": target, "registered_as": entry.name if entry else None})
    return out
