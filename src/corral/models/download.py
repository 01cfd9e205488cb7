"""Download Hugging Face model repos into the standard HF cache, and verify what was downloaded.

Files come through :func:`huggingface_hub.snapshot_download` (its cache layout, progress bars, per-blob file lock
and in-call ``Range`` resume). Around it, before a byte is fetched: the model listing (commit + hashes) and the tree
listing are checked (:mod:`corral.models.hub_listing`: paths, digests, agreement), only the checked paths are let
through, each missing file's metadata is checked (its ETag names the cached blob), and the disk must hold the
missing bytes plus a free-space reserve. Files are hashed (LFS sha256 / git blob sha1): cached ones before they
are reused (a process killed before its own check left them unverified; a registered snapshot is only size-checked)
and every one that arrives; a mismatch is removed from the cache, temp files a killed download left beside a blob
now complete are removed, and every failure becomes a one-line CorralError.
huggingface_hub freezes HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_ENDPOINT at import; they are read here at
call time and passed explicitly.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url, snapshot_download
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

from corral.errors import BadReferenceError, CorralError, DownloadError, InsufficientStorageError, OfflineError
from corral.models.hub_auth import LOGIN, hub_site, refusal, token_sent
from corral.models.hub_listing import Expected, check_etag, check_tree, duplicate_weights, expected_file

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
    reserve: int = 0,
    verified: Collection[Path] = (),
) -> Path:
    """Download (or reuse) a snapshot of a HF model repo into the standard HF cache; return the snapshot folder.

    ``reserve``: bytes of disk that must stay free after the download, or it is refused before the first byte.
    ``verified``: snapshot folders checked before (registered models): their cached files are size-checked, not
    hashed again; any other cached file is hashed before it is reused.
    """
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    cache_dir = hub_cache_dir()
    where = f"{repo_id}@{revision}" if revision else repo_id
    listed = False
    try:
        if _offline_mode():
            return _cached_snapshot(repo_id, revision, cache_dir, where, None)
        api = HfApi(endpoint=endpoint)
        info = api.model_info(repo_id, revision=revision, timeout=timeout, files_metadata=True)
        plan = _plan(info, repo_id, where, cache_dir)
        check_tree(api.list_repo_tree(repo_id, revision=plan.commit, recursive=True), plan.expected,
                   plan.snapshot, where)
        listed = True
        # a cached file is checked before it is reused: a process killed before its own check left it unverified
        present = [e for e in plan.expected if (plan.snapshot / e.path).exists()]
        _sweep(plan, present, hash_it=plan.snapshot not in verified)
        missing = [e for e in plan.expected if not (plan.snapshot / e.path).exists()]
        _check_space(plan.storage, missing, reserve, where)
        _check_metadata(repo_id, plan.commit, missing, endpoint, timeout, where)
        bad = _fetch(repo_id, plan, missing, endpoint, timeout, progress)
        if revision != plan.commit:
            _write_ref(plan.storage, revision or constants.DEFAULT_REVISION, plan.commit)
    except CorralError:
        raise
    except (httpx2.TransportError, OfflineModeIsEnabled) as exc:
        if listed:  # the hub answered, then the connection broke while downloading files
            raise DownloadError(f"download of {where} was interrupted: {_one_line(exc)}", "run it again") from exc
        return _cached_snapshot(repo_id, revision, cache_dir, where, exc)
    except Exception as exc:  # every other library failure becomes one clear CorralError
        raise _translate(exc, repo_id, where, endpoint) from exc
    if bad:
        raise DownloadError(
            f"{', '.join(bad)} of {where} failed verification against the hub's checksum;"
            " the corrupt download was removed from the cache",
            hint="run the download again",
        )
    if callable(progress):
        progress(PullProgress(repo_id, plan.total, plan.total))
    return plan.snapshot


@dataclass(frozen=True)
class _Plan:
    commit: str
    storage: Path  # the repo's folder in the cache
    snapshot: Path
    expected: list[Expected]

    @property
    def total(self) -> int:
        return sum(e.size or 0 for e in self.expected)


def _fetch(repo_id: str, plan: _Plan, missing: list[Expected], endpoint: str | None, timeout: float,
           progress: Progress) -> list[str]:
    """snapshot_download of the checked paths at the pinned commit; the paths of arrivals that fail their check."""
    if callable(progress):
        progress(PullProgress(repo_id, 0, plan.total))
    try:
        folder = snapshot_download(
            repo_id,
            revision=plan.commit,  # pinned: what is downloaded is exactly what was listed and checked
            cache_dir=plan.storage.parent,
            endpoint=endpoint,
            etag_timeout=timeout,
            tqdm_class=_bars(progress, repo_id, plan.total),
            allow_patterns=[glob.escape(e.path) for e in plan.expected],  # only the checked paths
        )
    except Exception:
        _sweep(plan, missing)  # what did arrive must not stay unverified
        raise
    bad = _sweep(plan, missing)
    _drop_stale_temp(plan)
    if Path(folder).resolve() != plan.snapshot.resolve():
        raise DownloadError(f"unexpected snapshot folder for {repo_id}: {folder}")
    return bad


def _plan(info: Any, repo_id: str, where: str, cache_dir: Path) -> _Plan:
    """From the listing: the commit, the repo's cache folder, the snapshot folder and the files to expect
    (paths and digests checked, duplicate weight formats left out)."""
    commit = info.sha or ""
    if not _COMMIT_RE.fullmatch(commit):
        raise DownloadError(f"the hub returned an invalid commit id for {where}: {commit!r}")
    if info.siblings is None:
        raise DownloadError(f"the hub returned no file list for {where}")
    storage = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = storage / "snapshots" / commit
    expected = [expected_file(s, snapshot) for s in info.siblings]
    ignore = duplicate_weights([e.path for e in expected])
    kept = [e for e in expected if not any(fnmatch.fnmatch(e.path, p) for p in ignore)]
    return _Plan(commit, storage, snapshot, kept)


def _check_space(storage: Path, missing: list[Expected], reserve: int, where: str) -> None:
    """Refuse, before the first byte, a download that would leave less than ``reserve`` bytes free."""
    if not missing:
        return
    needed = sum(e.size or 0 for e in missing)
    folder = next(p for p in (storage, *storage.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if needed + reserve > free:
        raise InsufficientStorageError(
            f"not enough disk space for {where}: it needs {_size(needed)} and {folder} has {_size(free)} free, "
            f"of which {_size(reserve)} must stay free",
            "free some disk space, or lower the download_reserve setting (CORRAL_DOWNLOAD_RESERVE)")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _check_metadata(repo_id: str, commit: str, missing: list[Expected], endpoint: str | None, timeout: float,
                    where: str) -> None:
    """Each missing file's metadata (a HEAD), checked before huggingface_hub fetches it (check_etag)."""
    def head(exp: Expected) -> None:
        url = hf_hub_url(repo_id, exp.path, revision=commit, endpoint=endpoint)
        meta = get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint)
        check_etag(meta.etag, meta.commit_hash, exp.path, commit, where)

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="corral-head") as pool:
        list(pool.map(head, missing))


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


def _file_digest(path: Path, expected: Expected) -> str:
    h = hashlib.sha256() if expected.sha256 is not None else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _matches(file: Path, exp: Expected, blobs: Path, hash_it: bool) -> bool:
    """A regular file, or a link into this repo's blobs/, of the listed size (and digest, with ``hash_it``)."""
    real = Path(os.path.realpath(file))
    if file.is_symlink() and real.parent != blobs.resolve():
        return False
    if not file.is_file() or (exp.size is not None and file.stat().st_size != exp.size):
        return False
    want = exp.sha256 or exp.git_sha1
    return not hash_it or want is None or _file_digest(file, exp) == want


def _sweep(plan: _Plan, files: list[Expected], *, hash_it: bool = True) -> list[str]:
    """Check (hash) ``files`` in the snapshot; remove those that do not match; their paths."""
    blobs = plan.storage / "blobs"
    bad = [exp.path for exp in files if not _matches(plan.snapshot / exp.path, exp, blobs, hash_it)]
    for path in bad:
        _discard(plan.snapshot / path, plan.storage)
    return bad


def _drop_stale_temp(plan: _Plan) -> None:
    """Remove temp files (``<blob>.*.incomplete``) that a killed download left beside a blob now complete."""
    for exp in plan.expected:
        blob = Path(os.path.realpath(plan.snapshot / exp.path))
        if blob.is_file() and blob.parent == (plan.storage / "blobs").resolve():
            for stale in blob.parent.glob(glob.escape(blob.name) + "*.incomplete"):
                stale.unlink(missing_ok=True)


def _discard(pointer: Path, storage: Path) -> None:
    """Remove a snapshot entry and the blob it points to (only if that blob lives in this repo's blobs/)."""
    blob = Path(os.path.realpath(pointer))
    if blob != pointer and blob.parent == (storage / "blobs").resolve():
        blob.unlink(missing_ok=True)
    pointer.unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _translate(exc: Exception, repo_id: str, where: str, endpoint: str | None) -> CorralError:
    status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
    sent = token_sent(exc)  # whether the refused request carried the stored token (or HF_TOKEN)
    refused = refusal(status, gated=isinstance(exc, GatedRepoError), sent=sent, what=where,
                      page=f"{hub_site(endpoint)}/{repo_id}")  # 401 / 403: the next step to take
    if refused is not None:
        return refused
    if isinstance(exc, GatedRepoError):
        return DownloadError(f"repository {where} is gated: you need to accept its terms and log in", LOGIN)
    if isinstance(exc, RepositoryNotFoundError):
        no_access = ", or your token has no access to it (a private repo)" if sent else ""
        return DownloadError(f"repository {where} not found on {endpoint or constants.ENDPOINT}{no_access}")
    if isinstance(exc, RevisionNotFoundError):
        return DownloadError(f"revision not found: {where}")
    if isinstance(exc, RemoteEntryNotFoundError):
        return DownloadError(f"a file listed for {where} is missing on the hub: {_one_line(exc)}")
    if isinstance(exc, HfHubHTTPError):
        return DownloadError(f"the hub answered HTTP {status} for {where}: {_one_line(exc)}")
    if isinstance(exc, HFValidationError):
        return BadReferenceError(f"invalid Hugging Face repository id {where!r}: {_one_line(exc)}")
    if isinstance(exc, LocalEntryNotFoundError):
        if isinstance(exc.__cause__, FileMetadataError):
            return DownloadError(f"{endpoint or constants.ENDPOINT} does not answer like a Hugging Face hub")
        return OfflineError(f"the Hugging Face Hub stopped answering while downloading {where}", _OFFLINE_HINT)
    return DownloadError(f"download of {where} failed: {_one_line(exc)}")
