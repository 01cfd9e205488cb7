"""Download Hugging Face model repos into the standard HF cache, and verify what was downloaded.

Files come through :func:`huggingface_hub.snapshot_download` (its cache layout, progress bars and in-call
``Range`` resume). Around it: one listing with a timeout (commit + hashes), paths that would escape the snapshot
are refused, every file this call materialized is hashed (LFS sha256 / git blob sha1) and a mismatch is removed
from the cache, and every failure becomes a one-line CorralError. huggingface_hub freezes HF_HOME, HF_HUB_CACHE,
HF_HUB_OFFLINE and HF_ENDPOINT at import; they are read here at call time and passed explicitly.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import httpx2
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

from corral.errors import BadReferenceError, CorralError, DownloadError, OfflineError

__all__ = ["Progress", "PullProgress", "download_repo", "hub_cache_dir"]


@dataclass(frozen=True)
class PullProgress:
    """Bytes of a repo in the cache so far (``completed`` never decreases; equals ``total`` at the end)."""

    repo: str
    completed: int
    total: int


# True: huggingface_hub's bars on stderr; False: silent; a callable: PullProgress events, no bars
Progress = bool | Callable[[PullProgress], None]

_CHUNK = 1024 * 1024
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"
_OFFLINE_HINT = "to work offline, register a local model folder or GGUF file instead"


class _QuietTqdm(hf_tqdm):
    """huggingface_hub's progress bar, always disabled (``progress=False``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]


def _reporting_tqdm(repo: str, total: int, report: Callable[[PullProgress], None]) -> type[hf_tqdm]:
    """A hidden progress bar class that turns the snapshot's bytes-written bar into PullProgress.

    snapshot_download (huggingface_hub 2.x) opens several bars with ``tqdm_class``; the one named
    ``huggingface_hub.snapshot_download`` counts bytes written to the cache, every file's (cached
    ones as ``initial``). Other bars are ignored. Should a release rename it, callers still get the
    first (0) and the last (``total``) events, from :func:`download_repo` itself.
    """
    done = [0]

    class _Reporting(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._counts = kwargs.get("name") == "huggingface_hub.snapshot_download"
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

        def update(self, n: float | None = 1) -> bool | None:
            if self._counts and n:
                done[0] = min(total, done[0] + int(n))
                report(PullProgress(repo, done[0], total))
            return super().update(n)  # type: ignore[no-any-return]

    return _Reporting


def _bars(progress: Progress, repo: str, total: int) -> type[hf_tqdm] | None:
    if callable(progress):
        return _reporting_tqdm(repo, total, progress)
    return None if progress else _QuietTqdm


@dataclass(frozen=True)
class _Expected:
    path: str
    size: int | None
    sha256: str | None  # LFS files: sha256 of the content
    git_sha1: str | None  # regular files: git blob id


def hub_cache_dir() -> Path:
    """The HF hub cache folder, resolved from the environment now, with huggingface_hub's precedence."""
    env = os.environ.get
    home = env("HF_HOME") or os.path.join(env("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    cache = env("HF_HUB_CACHE") or env("HUGGINGFACE_HUB_CACHE") or os.path.join(_expand(home), "hub")
    return Path(_expand(cache)).resolve()


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def _offline_mode() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        return constants.is_offline_mode()
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def download_repo(
    repo_id: str,
    revision: str | None = None,
    *,
    progress: Progress = True,
    endpoint: str | None = None,
    timeout: float = 10.0,
) -> Path:
    """Download (or reuse) a snapshot of a HF model repo into the standard HF cache; return the snapshot folder."""
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    cache_dir = hub_cache_dir()
    where = f"{repo_id}@{revision}" if revision else repo_id
    listed = False
    try:
        if _offline_mode():
            return _cached_snapshot(repo_id, revision, cache_dir, where, None)
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, timeout=timeout, files_metadata=True)
        commit, storage, snapshot, expected, ignore = _plan(info, repo_id, where, cache_dir)
        listed = True
        present = {e.path for e in expected if (snapshot / e.path).exists()}
        total = sum(e.size or 0 for e in expected)
        if callable(progress):
            progress(PullProgress(repo_id, 0, total))
        try:
            folder = snapshot_download(
                repo_id,
                revision=commit,  # pinned: what is downloaded is exactly what was listed and checked above
                cache_dir=cache_dir,
                endpoint=endpoint,
                etag_timeout=timeout,
                tqdm_class=_bars(progress, repo_id, total),
                ignore_patterns=ignore or None,
            )
        except Exception:
            _sweep(snapshot, storage, expected, skip_hash=present)  # what did arrive must not stay unverified
            raise
        bad = _sweep(snapshot, storage, expected, skip_hash=present)
        if Path(folder).resolve() != snapshot.resolve():
            raise DownloadError(f"unexpected snapshot folder for {where}: {folder}")
        if revision != commit:
            _write_ref(storage, revision or constants.DEFAULT_REVISION, commit)
    except CorralError:
        raise
    except (httpx2.TransportError, OfflineModeIsEnabled) as exc:
        if listed:  # the hub answered, then the connection broke while downloading files
            raise DownloadError(f"download of {where} was interrupted: {_one_line(exc)}", "run it again") from exc
        return _cached_snapshot(repo_id, revision, cache_dir, where, exc)
    except Exception as exc:  # every other library failure becomes one clear CorralError
        raise _translate(exc, where, endpoint) from exc
    if bad:
        raise DownloadError(
            f"{', '.join(bad)} of {where} failed verification against the hub's checksum;"
            " the corrupt download was removed from the cache",
            hint="run the download again",
        )
    if callable(progress) and listed:
        progress(PullProgress(repo_id, total, total))
    return snapshot


def _plan(info: Any, repo_id: str, where: str,
          cache_dir: Path) -> tuple[str, Path, Path, list[_Expected], list[str]]:
    """From the listing: the commit, the repo's cache folder, the snapshot folder, the files to expect
    (paths checked, duplicate weight formats left out) and the patterns left out."""
    commit = info.sha or ""
    if not _COMMIT_RE.fullmatch(commit):
        raise DownloadError(f"the hub returned an invalid commit id for {where}: {commit!r}")
    if info.siblings is None:
        raise DownloadError(f"the hub returned no file list for {where}")
    storage = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = storage / "snapshots" / commit
    expected = [_expected(s, snapshot) for s in info.siblings]
    ignore = _duplicate_weights([e.path for e in expected])
    kept = [e for e in expected if not any(fnmatch.fnmatch(e.path, p) for p in ignore)]
    return commit, storage, snapshot, kept, ignore


def _cached_snapshot(
    repo_id: str, revision: str | None, cache_dir: Path, where: str, error: Exception | None
) -> Path:
    """The complete cached snapshot for ``revision``, found without the network, or OfflineError."""
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except OSError as exc:  # LocalEntryNotFoundError / IncompleteSnapshotError
        if error is None or isinstance(error, OfflineModeIsEnabled):
            msg = f"offline mode is on (HF_HUB_OFFLINE=1) and {where} is not fully in the local cache"
        else:
            msg = f"cannot reach the Hugging Face Hub to download {where} ({_one_line(error)})"
        raise OfflineError(msg, hint=_OFFLINE_HINT) from exc


# Formats that duplicate safetensors weights; pickle ones are also unsafe to load.
_DUPLICATE_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.h5", "*.msgpack", "*.ot"]


def _duplicate_weights(paths: list[str]) -> list[str]:
    """Patterns to skip: other weight formats, when the repo has safetensors weights."""
    return _DUPLICATE_WEIGHTS if any(p.endswith(".safetensors") for p in paths) else []


def _expected(sibling: Any, snapshot: Path) -> _Expected:
    path = str(sibling.rfilename)
    _check_path(path, snapshot)
    lfs = sibling.lfs
    if lfs is not None:
        return _Expected(path, lfs.size, str(lfs.sha256).lower(), None)
    blob_id = sibling.blob_id
    return _Expected(path, sibling.size, None, str(blob_id).lower() if blob_id else None)


def _check_path(path: str, snapshot: Path) -> None:
    """Refuse a repo file path that is empty, absolute, drive-anchored or climbs out with ``..``."""
    posix, win = PurePosixPath(path), PureWindowsPath(path)
    unsafe = (
        not path
        or "\0" in path
        or posix.is_absolute()
        or bool(win.drive or win.root)
        or ".." in path.replace("\\", "/").split("/")
        or not Path(os.path.normpath(snapshot / path)).is_relative_to(snapshot)
    )
    if unsafe:
        raise DownloadError(f"refusing unsafe file path {path!r} listed by the hub (it would escape the model folder)")


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    """Record ``revision -> commit`` in ``refs/`` like huggingface_hub does, so offline lookups find it."""
    refs = storage / "refs"
    ref = refs / revision
    if not ref.resolve().is_relative_to(refs.resolve()):
        raise DownloadError(f"invalid revision name {revision!r}")
    if ref.is_file() and ref.read_text() == commit:
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f"{ref.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)


def _file_digest(path: Path, expected: _Expected) -> str:
    h = hashlib.sha256() if expected.sha256 is not None else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _matches(file: Path, exp: _Expected, *, hash_it: bool) -> bool:
    if not file.is_file() or (exp.size is not None and file.stat().st_size != exp.size):
        return False
    want = exp.sha256 or exp.git_sha1
    return not hash_it or want is None or _file_digest(file, exp) == want


def _sweep(snapshot: Path, storage: Path, expected: list[_Expected], *, skip_hash: set[str]) -> list[str]:
    """Hash the files this call materialized (size-check the others); remove those that do not match."""
    bad = [exp.path for exp in expected if not _matches(snapshot / exp.path, exp, hash_it=exp.path not in skip_hash)]
    for path in bad:
        _discard(snapshot / path, storage)
    return bad


def _discard(pointer: Path, storage: Path) -> None:
    """Remove a snapshot entry and the blob it points to (only if that blob lives in this repo's blobs/)."""
    blob = Path(os.path.realpath(pointer))
    if blob != pointer and blob.parent == (storage / "blobs").resolve():
        blob.unlink(missing_ok=True)
    pointer.unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _translate(exc: Exception, where: str, endpoint: str | None) -> CorralError:
    status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
    if isinstance(exc, GatedRepoError):
        return DownloadError(f"repository {where} is gated: you need to accept its terms and log in", _LOGIN_HINT)
    if isinstance(exc, RepositoryNotFoundError):
        if status == 401:
            return DownloadError(f"repository {where} not found (or private: it needs a login)", _LOGIN_HINT)
        return DownloadError(f"repository {where} not found on {endpoint or constants.ENDPOINT}")
    if isinstance(exc, RevisionNotFoundError):
        return DownloadError(f"revision not found: {where}")
    if isinstance(exc, RemoteEntryNotFoundError):
        return DownloadError(f"a file listed for {where} is missing on the hub: {_one_line(exc)}")
    if isinstance(exc, HfHubHTTPError):
        if status in (401, 403):
            return DownloadError(f"access to {where} was refused (HTTP {status})", _LOGIN_HINT)
        return DownloadError(f"the hub answered HTTP {status} for {where}: {_one_line(exc)}")
    if isinstance(exc, HFValidationError):
        return BadReferenceError(f"invalid Hugging Face repository id {where!r}: {_one_line(exc)}")
    if isinstance(exc, LocalEntryNotFoundError):
        if isinstance(exc.__cause__, FileMetadataError):
            return DownloadError(f"{endpoint or constants.ENDPOINT} does not answer like a Hugging Face hub")
        return OfflineError(f"the Hugging Face Hub stopped answering while downloading {where}", _OFFLINE_HINT)
    return DownloadError(f"download of {where} failed: {_one_line(exc)}")
