"""Packaged models split in parts. A package index caps a file's size, so a model may ship one
file in parts (``model.bin.part1``, ``model.bin.part2``...), beside its other files or in sibling
packages named like the first with ``_part1`` replaced by ``_partN`` (the same folder inside
each). Such a model is the one packaged model corral copies: the parts are joined into a temporary
folder under ``$CORRAL_HOME/packaged`` (with the model's other files), the joined size is checked
against the sum of the parts, its sha256 recorded (``corral-parts.json``, which inspection reports),
the model loaded once with its engine's library to check it (its header read in full when the
library is not installed), and only then is the folder renamed into place, atomically. Any
failure removes the temporary folder: nothing is left behind and nothing is registered."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import InvalidModelFileError, ModelNotFoundError
from corral.models.info import ModelInfo
from corral.models.packaged import package_dir

PART = re.compile(r"^(?P<stem>.+)\.part(?P<n>[1-9][0-9]*)$")
MAX_PARTS = 64
RECORD = "corral-parts.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Split:
    folder: Path  # the packaged model folder (part 1 and the model's other files)
    target: str  # the joined file's name
    parts: tuple[Path, ...]  # in order
    next_package: str | None  # the package a further part would come from


def find_split(folder: Path, package: str) -> Split | None:
    """The file of ``folder`` (inside ``package``) that ships in parts, or None when none does."""
    firsts = sorted(f for f in folder.iterdir() if f.is_file() and (m := PART.match(f.name)) and m["n"] == "1"
                    and not (folder / m["stem"]).exists())
    if not firsts:
        return None
    if len(firsts) > 1:
        raise InvalidModelFileError(f"{folder} holds several files in parts ({', '.join(f.name for f in firsts)})")
    stem = PART.match(firsts[0].name)["stem"]  # type: ignore[index]
    base = package.removesuffix("_part1") if package.endswith("_part1") else None
    inside = folder.relative_to(package_dir(package))
    parts = [firsts[0]]
    for n in range(2, MAX_PARTS + 1):
        found = _part(folder, inside, base, f"{stem}.part{n}", n)
        if found is None:
            break
        parts.append(found)
    following = f"{base}_part{len(parts) + 1}" if base else None
    if len(parts) == 1:
        raise ModelNotFoundError(f"{firsts[0].name} in {package} is part 1 of a file split in parts; "
                                 "no part 2 was found", f"install the package with the next part, e.g. "
                                 f"pip install {(following or package).replace('_', '-')}")
    return Split(folder, stem, tuple(parts), following)


def _part(folder: Path, inside: Path, base: str | None, name: str, n: int) -> Path | None:
    if (folder / name).is_file():
        return folder / name
    if base is None:
        return None
    try:
        other = package_dir(f"{base}_part{n}") / inside / name
    except ModelNotFoundError:
        return None
    return other if other.is_file() else None


def join_split(split: Split, root: Path, name: str, inspect: Callable[[Path], ModelInfo]) -> Path:
    """The model of ``split`` joined into ``root/name`` (checked, then renamed into place); ``inspect``
    reads a folder into a ModelInfo (it reads the CTranslate2 header in full)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        for item in split.folder.iterdir():
            if item.is_file() and not PART.match(item.name) and item.suffix not in (".py", ".pyc"):
                shutil.copyfile(item, staging / item.name)
        record = _join(split, staging / split.target)
        (staging / RECORD).write_text(json.dumps(record, indent=2))
        try:
            load_check(staging, inspect(staging))
        except InvalidModelFileError as exc:
            hint = f"a further part may be missing: is {split.next_package} installed?" if split.next_package else None
            raise InvalidModelFileError(f"the model joined from {len(split.parts)} parts does not load: {exc.message}",
                                        hint or exc.hint) from None
        if final.exists():  # a copy left by an earlier registration: replaced by this checked one
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _join(split: Split, out_path: Path) -> dict[str, Any]:
    digest, written = hashlib.sha256(), 0
    expected = sum(p.stat().st_size for p in split.parts)
    with out_path.open("wb") as out:
        for part in split.parts:
            with part.open("rb") as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    if written != expected or out_path.stat().st_size != expected:
        raise InvalidModelFileError(f"joining {split.target} wrote {written} bytes; its parts hold {expected}")
    return {"file": split.target, "size": written, "sha256": digest.hexdigest(),
            "parts": [{"path": str(p), "size": p.stat().st_size} for p in split.parts]}


def read_record(folder: Path) -> dict[str, Any] | None:
    """What joining recorded in ``folder`` (None for a folder corral did not join)."""
    path = folder / RECORD
    if not path.is_file() or path.stat().st_size > 1 << 20:
        return None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    return None


def load_check(folder: Path, info: ModelInfo) -> None:
    """Load a joined CTranslate2 model once with CTranslate2 (int8 on the CPU: the smallest load)."""
    import importlib.util

    if info.format != "ctranslate2" or importlib.util.find_spec("ctranslate2") is None:
        return  # inspect() has read the header and every variable's extent: all there is to check without it
    import ctranslate2

    kinds = {"WhisperSpec": "Whisper"}
    kind = kinds.get(info.architecture or "")
    if kind is None:
        return
    try:
        model = getattr(ctranslate2.models, kind)(str(folder), device="cpu", compute_type="int8")
    except (RuntimeError, ValueError, OSError) as exc:
        raise InvalidModelFileError(f"CTranslate2 could not load it: {str(exc).strip().splitlines()[0]}") from None
    del model
