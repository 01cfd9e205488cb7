"""The model's facts an export's README states: inspect's figures, formatted, and the licence
where the files state one (GGUF ``general.license``, a model card's ``license:``, a package's
licence metadata). Read with bounds; never loads weights."""

from __future__ import annotations

import re
from pathlib import Path

from corral.models.store import Entry

_LICENSE = re.compile(r"^license:\s*['\"]?([A-Za-z0-9.+_-]{1,64})['\"]?\s*$", re.MULTILINE)


def _card_licence(folder: Path) -> str | None:
    from corral.models.inspect import card_front_matter

    front = card_front_matter(folder)
    match = _LICENSE.search(front) if front else None
    return match.group(1) if match else None


def _gguf_licence(path: Path) -> str | None:
    from corral.models.gguf_reader import read_gguf_header

    try:
        value = read_gguf_header(path).metadata.get("general.license")
    except Exception:  # an unreadable header states nothing; inspection already judged the file
        return None
    return str(value)[:64] if value else None


def _package_licence(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata(distribution)
    except PackageNotFoundError:
        return None
    value = meta["License-Expression"] or meta["License"]
    return str(value).splitlines()[0][:64] if value else None


def licence(entry: Entry, distribution: str | None = None) -> str | None:
    """The licence the model's files (or its package) state, or None."""
    path = entry.path
    if path.is_file() and path.suffix.lower() == ".gguf":
        found = _gguf_licence(path)
    else:
        folder = path if path.is_dir() else path.parent
        found = next(filter(None, (_card_licence(f) for f in (folder, folder.parent))), None)
    if found is None and distribution:
        found = _package_licence(distribution)
    return found


def memory_text(entry: Entry) -> str | None:
    memory = entry.info.memory
    if memory is None or not memory.cpu_bytes:
        return None
    return f"{memory.cpu_bytes / 1e6:,.0f} MB on CPU (weights and caches of the default load)"


def parameters_text(count: int | None) -> str | None:
    if not count:
        return None
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{unit} ({count:,})"
    return f"{count:,}"
