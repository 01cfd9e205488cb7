"""What a Hugging Face hub may list before corral fetches a byte, checked: repo file paths (relative, ``/``
separators, no ``.``/``..`` parts, no backslash or control characters, nothing outside the snapshot), digests (git
blob ids 40 hex, LFS sha256 64 hex), sizes, the tree listing huggingface_hub downloads from (every entry checked,
and agreeing with the model listing), and the ETag a file's metadata answers with (huggingface_hub names the cached
blob, and its lock, after it). Anything else is refused with a :class:`DownloadError` naming what was wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from corral.errors import DownloadError

__all__ = ["Expected", "check_etag", "check_path", "check_tree", "duplicate_weights", "expected_file"]

_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PLAIN_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,199}")
# Formats that duplicate safetensors weights; pickle ones are also unsafe to load.
_DUPLICATE_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.h5", "*.msgpack", "*.ot"]


@dataclass(frozen=True)
class Expected:
    """A file the model listing promises: its path, size and digest."""

    path: str
    size: int | None
    sha256: str | None  # LFS files: sha256 of the content
    git_sha1: str | None  # regular files: git blob id


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_path(path: object, snapshot: Path) -> str:
    """``path`` if it is a safe repo file path inside ``snapshot``; else refuse the listing."""
    text = path if isinstance(path, str) else ""
    parts = text.split("/")
    unsafe = (
        not text
        or len(text) > 1000
        or any(ord(c) < 32 or ord(c) == 127 for c in text)
        or "\\" in text
        or PurePosixPath(text).is_absolute()
        or bool(PureWindowsPath(text).drive)
        or any(part in ("", ".", "..") for part in parts)
        or not Path(os.path.normpath(snapshot / text)).is_relative_to(snapshot)
    )
    if unsafe:
        raise DownloadError(f"refusing unsafe file path {_shown(path)} listed by the hub (a repo path is relative, "
                            "with / separators and no . or .. parts: it must not escape the model folder)")
    return text


def _digest(value: object, pattern: re.Pattern[str], what: str, path: str) -> str:
    text = value.lower() if isinstance(value, str) else ""
    if not pattern.fullmatch(text):
        raise DownloadError(f"refusing the hub's listing: {path!r} has an invalid {what} {_shown(value)}")
    return text


def _size(value: object, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DownloadError(f"refusing the hub's listing: {path!r} has an invalid size {_shown(value)}")
    return value


def expected_file(sibling: Any, snapshot: Path) -> Expected:
    """A model-listing entry (``RepoSibling``) -> Expected, every field checked."""
    path = check_path(sibling.rfilename, snapshot)
    if sibling.blob_id is not None:
        _digest(sibling.blob_id, _SHA1, "git blob id", path)
    lfs = sibling.lfs
    if lfs is not None:
        return Expected(path, _size(lfs.size, path), _digest(lfs.sha256, _SHA256, "LFS sha256", path), None)
    blob_id = _digest(sibling.blob_id, _SHA1, "git blob id", path) if sibling.blob_id is not None else None
    return Expected(path, _size(sibling.size, path), None, blob_id)


def check_tree(entries: Iterable[Any], expected: list[Expected], snapshot: Path, where: str) -> None:
    """Check every entry of the tree listing (what huggingface_hub downloads from), and that each expected file is
    a file there with the same size and digest."""
    files: dict[str, Any] = {}
    for entry in entries:
        path = check_path(getattr(entry, "path", None), snapshot)
        if hasattr(entry, "blob_id"):  # a RepoFile; other entries (folders) have a path only
            _digest(entry.blob_id, _SHA1, "git blob id", path)
            _size(entry.size, path)
            if entry.lfs is not None:
                _digest(entry.lfs.sha256, _SHA256, "LFS sha256", path)
                _size(entry.lfs.size, path)
            files[path] = entry
    for exp in expected:
        entry = files.get(exp.path)
        lfs = None if entry is None else entry.lfs
        digest = str(lfs.sha256 if lfs is not None else getattr(entry, "blob_id", None)).lower()
        size = lfs.size if lfs is not None else getattr(entry, "size", None)
        want = exp.sha256 or exp.git_sha1
        if entry is None or (want is not None and digest != want) or (exp.size is not None and size != exp.size):
            raise DownloadError(f"refusing {where}: the hub's listings disagree about {exp.path!r} (the tree "
                                "listing does not have it as the same file)")


def check_etag(etag: str | None, commit: str | None, path: str, want_commit: str, where: str) -> None:
    """The metadata of a file about to be fetched: its ETag names the cached blob, so it must be a plain name;
    its commit must be the one pinned."""
    if etag is None or not _PLAIN_NAME.fullmatch(etag):
        raise DownloadError(f"refusing {where}: the hub answered {path!r} with an unusable ETag {_shown(etag)} "
                            "(huggingface_hub names the cached file after it)")
    if commit is not None and commit != want_commit:
        raise DownloadError(f"refusing {where}: the hub answered {path!r} for commit {_shown(commit)}, "
                            f"not the listed {want_commit}")


def duplicate_weights(paths: list[str]) -> list[str]:
    """Patterns to skip: other weight formats, when the repo has safetensors weights."""
    return _DUPLICATE_WEIGHTS if any(p.endswith(".safetensors") for p in paths) else []
