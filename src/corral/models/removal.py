"""Removing a registered model, for every door (`corral rm`, ``DELETE /api/models/{name}``): the
registration always; with ``delete_files``, the files too, but only files corral itself put there (a
downloaded repo's cache folder, a packaged model it joined from parts), never a user's folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ModelNotFoundError
from corral.models.store import Store
from corral.models.system import SYSTEM_MODELS


@dataclass(frozen=True)
class Removed:
    name: str
    deleted: str | None  # the folder deleted, if any
    note: str | None  # why files were left, where they were

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "deleted": self.deleted, "note": self.note}


def remove_model(store: Store, name: str, *, delete_files: bool = False) -> Removed:
    entry = store.get(name)
    if entry is None and name in SYSTEM_MODELS:
        raise ModelNotFoundError(f"{name} is built in, not registered: it is listed while the {name} "
                                 "program is installed")
    if entry is None:
        raise ModelNotFoundError(f"no model named {name!r} is registered", "see `corral list`")
    store.remove(entry.name)
    if not delete_files:
        return Removed(entry.name, None, None)
    if not entry.owned:
        return Removed(entry.name, None, f"left its files in place: {entry.path} was not downloaded by corral")
    if entry.source_kind == "package":  # a model corral joined from parts, under its data folder
        shutil.rmtree(entry.path, ignore_errors=True)
        return Removed(entry.name, str(entry.path), None)
    removed = _delete_hf_snapshot(entry.path)
    return Removed(entry.name, removed, None if removed else "its files were already gone")


def _delete_hf_snapshot(snapshot: Path) -> str | None:
    """Delete a downloaded repo's cache folder (models--org--name), which holds only that repo."""
    repo_dir = snapshot.parent.parent
    if snapshot.parent.name != "snapshots" or not repo_dir.name.startswith("models--"):
        return None
    if not repo_dir.exists():
        return None
    shutil.rmtree(repo_dir)
    return str(repo_dir)
