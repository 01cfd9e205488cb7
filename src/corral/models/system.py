"""Built-in models that are programs installed on the system rather than files: ``espeak-ng``
(Debian's espeak-ng package) speaks as the model named ``espeak-ng``.

Such a model has no manifest row. It is present exactly while its program is on PATH: resolved by
name (after the registered models and aliases, so a user's own model of that name wins), listed
with the registered models by every door (``corral list``, ``/v1/models``, the sidecar's
``models/list``, all through :func:`every_entry`), inspected from the program's path. A row
written on first use would stay listed after the program was removed, and would need writing
before the first list; a name that follows the program needs neither. Asked for while the
program is missing, the name is a 503 naming the system package to install."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from corral.errors import MissingDependencyError
from corral.models.info import MemoryEstimate, ModelInfo
from corral.models.store import Entry, Store
from corral.tasks import Task

SOURCE_KIND = "system"
PROGRAM_BYTES = 16 * 1024 * 1024  # what one run of the program may take (a separate process)


@dataclass(frozen=True)
class SystemModel:
    name: str  # the model name, also the program's name on PATH
    engine: str
    tasks: tuple[str, ...]
    apt: str  # the Debian package that installs the program
    about: str


SYSTEM_MODELS: dict[str, SystemModel] = {
    "espeak-ng": SystemModel("espeak-ng", "espeak", (Task.SPEAK.value,), "espeak-ng",
                             "eSpeak NG: formant speech synthesis, over 100 languages and accents"),
}


def program_path(model: SystemModel) -> Path | None:
    found = shutil.which(model.name)
    return Path(found) if found else None


def inspect_program(path: Path) -> ModelInfo | None:
    """What a system model's program is, when ``path`` is one (its name is a system model's)."""
    model = SYSTEM_MODELS.get(path.name)
    if model is None or not path.is_file():
        return None
    info = ModelInfo(path=str(path), format="system", architecture=model.name, model_type=model.name,
                     tasks=list(model.tasks), engine=model.engine, size_bytes=path.stat().st_size,
                     sources=[str(path)], name_hint=model.name)
    info.notes.append(f"{model.about}; a program on this system (Debian package {model.apt}), run once per request")
    info.memory = MemoryEstimate(PROGRAM_BYTES, 0)
    return info


def system_entry(name: str) -> Entry | None:
    """The built-in model ``name`` while its program is installed; None for a name that is no
    system model's; a 503 naming the package when it is one whose program is missing."""
    model = SYSTEM_MODELS.get(name)
    if model is None:
        return None
    path = program_path(model)
    info = inspect_program(path) if path else None
    if path is None or info is None:
        raise MissingDependencyError(f"the {name} program is not installed",
                                     f"install it with: sudo apt-get install -y {model.apt}")
    return Entry(name, f"{SOURCE_KIND}:{name}", SOURCE_KIND, path, False, info, path.stat().st_mtime)


def system_entries(taken: set[str]) -> list[Entry]:
    """The built-in models whose programs are installed, but for names in ``taken``."""
    out = []
    for name, model in SYSTEM_MODELS.items():
        if name not in taken and program_path(model) is not None:
            entry = system_entry(name)
            if entry is not None:
                out.append(entry)
    return out


def every_entry(store: Store) -> list[Entry]:
    """Every model a user can name: the registered ones, then the built-in ones present."""
    entries = store.list()
    return entries + system_entries({e.name for e in entries})
