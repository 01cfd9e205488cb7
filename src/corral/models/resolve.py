"""Resolve what a user typed to a registered model, registering local and packaged models
on first use and downloading Hugging Face repos when asked to; a built-in system model
(``models/system.py``: espeak-ng) resolves by its name, unregistered."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from corral.config import Settings
from corral.errors import BadReferenceError, ConflictError, ModelNotFoundError
from corral.models.info import ModelInfo
from corral.models.inspect import inspect_path
from corral.models.packaged import find_packaged_model
from corral.models.refs import REPO_ID, ModelRef, check_name, parse_ref
from corral.models.store import Entry, Store
from corral.models.system import system_entry

if TYPE_CHECKING:
    from corral.models.download import Progress

MAX_ALIAS_DEPTH = 8


GENERIC_STEMS = frozenset({"model", "models", "weights", "checkpoint", "checkpoints", "snapshot", "files", "main"})


def derive_name(ref: ModelRef, path: Path, info: ModelInfo) -> str:
    """A registration name: the repo id, the package, or the file or folder name; for a folder or
    file with a generic name (``model``, ``model.gguf``) the package holding it, the model's own
    name for itself, or the folder above it."""
    if ref.kind == "hf":
        return ref.value
    stem = next((path.name[: -len(s)] for s in (".gguf", ".onnx") if path.name.lower().endswith(s)), path.name)
    if ref.kind == "package":
        stem = ref.value
    elif stem.lower() in GENERIC_STEMS:
        holder = path.parent
        stem = holder.name if (holder / "__init__.py").is_file() else info.name_hint or holder.name
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"
    return name[:120]


class Resolver:
    def __init__(self, settings: Settings, store: Store, *, allow_paths: bool = True) -> None:
        self.settings, self.store, self.allow_paths = settings, store, allow_paths

    def resolve(self, text: str, *, progress: Progress = True) -> Entry:
        """A registered name, an alias, a path, pkg:NAME or hf:ORG/NAME -> a registered model."""
        return self._resolve(text, alias_name=None, depth=0, progress=progress)

    def _resolve(self, text: str, alias_name: str | None, depth: int, progress: Progress) -> Entry:
        from corral.presets import without_mode

        if depth > MAX_ALIAS_DEPTH:
            raise BadReferenceError(f"alias chain through {text!r} is too deep or circular")
        model = without_mode(text)
        if model != text:  # MODEL@MODE: the model, with a mode's defaults
            return self._resolve(model, alias_name, depth + 1, progress)
        ref = parse_ref(text, allow_paths=self.allow_paths)
        if ref.kind == "name":
            entry = self.store.get(ref.value)
            if entry:
                return entry
            target = self.settings.all_aliases().get(ref.value)
            if target is not None:
                return self._resolve(target, alias_name or ref.value, depth + 1, progress)
            builtin = system_entry(ref.value)  # a program on this system (espeak-ng)
            if builtin is not None:
                return builtin
            local = Path.cwd() / ref.value
            if self.allow_paths and local.exists():
                if REPO_ID.match(ref.value):
                    raise BadReferenceError(
                        f"{ref.value!r} is ambiguous: both a local folder and a Hugging Face repo id",
                        f"write ./{ref.value} for the folder or hf:{ref.value} for the repo")
                return self._resolve(f"./{ref.value}", alias_name, depth + 1, progress)
            if REPO_ID.match(ref.value):
                raise ModelNotFoundError(f"no model named {ref.value!r} is registered",
                                         f"download it with `corral pull hf:{ref.value}`")
            if not self.allow_paths:
                raise ModelNotFoundError(f"no model named {ref.value!r}",
                                         "see what this server has: GET /v1/models, or the sidecar's models/list")
            raise ModelNotFoundError(f"no model, alias or file named {ref.value!r}",
                                     "see `corral list`, or give a path, pkg:NAME or hf:ORG/NAME")
        existing = self.store.find_by_source(str(ref))
        if existing and (ref.kind != "path" or existing.path.exists()):
            return existing
        return self.register(ref, name=alias_name, progress=progress)

    def register(self, ref: ModelRef, *, name: str | None = None, explicit_name: bool = False,
                 progress: Progress = True) -> Entry:
        """Inspect (downloading first for hf refs) and record a model under a unique name."""
        owned = False
        if ref.kind == "hf":
            from corral.models.download import download_repo

            verified = {e.path for e in self.store.list() if e.source_kind == "hf"}  # checked when registered
            path = download_repo(ref.value, ref.revision, progress=progress,
                                 reserve=self.settings.runtime.download_reserve, verified=verified)
            owned = True
        elif ref.kind == "package":
            path, owned = self._packaged(ref.value)
        elif ref.kind == "path":
            path = Path(ref.value)
            if not path.exists():
                raise ModelNotFoundError(f"no such file or folder: {path}")
        else:
            raise BadReferenceError(f"{ref.value!r} is a name, not a source to register")
        same = self._registered_at(path)
        if same is not None:  # the same files through another reference: one model, not two
            if explicit_name and name != same.name:
                raise ConflictError(f"{path} is already registered as {same.name!r}",
                                    "use that name, or add an alias for it in the config file")
            return same
        try:
            info = inspect_path(path)
        except BaseException:
            if owned and ref.kind == "package":  # a joined copy that does not inspect is not kept
                shutil.rmtree(path, ignore_errors=True)
            raise
        chosen = check_name(name) if name else derive_name(ref, path, info)
        current = self.store.get(chosen)
        if current and current.source != str(ref):
            if explicit_name:
                raise ConflictError(f"the name {chosen!r} is taken by {current.source}",
                                    "pick another with --name, or `corral rm` the old one")
            chosen = self._free_name(chosen)
        return self.store.put(chosen, str(ref), ref.kind, path, owned, info)

    def _packaged(self, package: str) -> tuple[Path, bool]:
        """(the packaged model's folder or file, whether corral made it): a model shipped in parts is
        joined under the data folder (``models/parts.py``), everything else used where it is."""
        from corral.models.parts import find_split, join_split

        path = find_packaged_model(package)
        split = find_split(path, package) if path.is_dir() else None
        if split is None:
            return path, False
        folder = self.settings.data_dir / "packaged"
        return join_split(split, folder, package.removesuffix("_part1"), inspect_path), True

    def _registered_at(self, path: Path) -> Entry | None:
        target = path.resolve()
        return next((e for e in self.store.list() if e.path.resolve() == target), None)

    def _free_name(self, base: str) -> str:
        taken = self.store.names()
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"
