"""A real local HTTP server that serves a folder the way the Hugging Face Hub serves a model repo.

The real ``huggingface_hub`` client (2.4.0) downloads from it when given ``endpoint=FakeHub.endpoint``.
It implements exactly what ``snapshot_download`` / ``hf_hub_download`` / ``HfApi.model_info`` call:

* ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}`` -> JSON with ``id``, ``sha`` and
  ``siblings`` (with ``?blobs=true``: ``size``, ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``);
* ``GET /api/models/{repo}/tree/{rev}[/{path}]`` -> JSON list of ``{type, path, oid, size[, lfs: {oid, size,
  pointerSize}]}`` (one page, no ``Link`` header);
* ``HEAD`` / ``GET /{repo}/resolve/{rev}/{file}`` -> ``X-Repo-Commit``, ``ETag`` (git blob sha1 for regular files,
  sha256 for LFS files), ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS files, ``Content-Length``,
  ``Accept-Ranges: bytes``; ``Range: bytes=N-`` / ``bytes=N-M`` answered with ``206`` and ``Content-Range``.

Errors use the Hub's ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
``GatedRepo``) so the client raises its typed errors. Xet storage is never advertised (no ``X-Xet-Hash``, no
``xetHash``), so the client falls back to plain HTTP.

Fault injection (set from the test, thread-safe enough for the client's worker threads):

* ``hub.cut_file(path, after=N, times=1)``: the next ``times`` GETs of ``path`` send full headers, then only ``N``
  body bytes, then the connection is closed mid-body;
* ``hub.corrupt.add(path)``: serve ``path`` with one byte flipped while advertising the hashes of the real content;
* ``hub.files[path] = b"..."``: add or override a file (any path, even ``../evil.txt``);
* ``hub.gated = True``: answer 401 ``GatedRepo`` on every repo route;
* ``hub.extra_siblings`` / ``hub.extra_tree``: raw entries appended to the model listing / the tree listing (poisoned
  paths or digests), and ``hub.sibling_overrides[path]`` / ``hub.tree_overrides[path]``: fields merged into that
  file's entry;
* ``hub.etags[path]``: the ETag (and ``X-Linked-Etag``) to advertise instead of the real one;
* ``hub.lengths[path] = N``: claim ``Content-Length`` / ``X-Linked-Size`` N while sending the real body, then close;
* ``hub.stall_file(path, after=N)``: the next GET of ``path`` sends ``N`` body bytes, sets ``hub.stalled``, waits
  until ``hub.release`` is set, then sends the rest;
* ``hub.redirect_to = "http://host:port"``: ``/resolve/`` of LFS files answers ``302`` to the same path on that
  origin (as the Hub sends LFS files to its CDN), with the metadata headers on the redirect.

Listing and account (tests/hub_models_api.py says exactly how each answers):

* ``hub.listed``: model entries (as the Hub stores them) that ``GET /api/models`` searches, filters, sorts and
  pages (``hub.page_size`` a page, ``Link: <...>; rel="next"``);
* ``hub.tokens[token] = "user"``: tokens ``GET /api/whoami-v2`` accepts (any other: 401);
* ``hub.gate = "manual"`` (or ``"auto"``): the repo is gated as on the real Hub: metadata for anyone, files 401
  ``GatedRepo`` without a token, 403 with a token not in ``hub.granted``; ``hub.private = True``: every repo route
  401 ``RepoNotFound`` without a token, 404 with one not granted. (``hub.gated`` above stays the blunt fault.)

Every request is recorded in ``hub.requests`` (method, path, query, Range header). The HTTP handler that
answers the requests is in tests/hub_handler.py.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from tests.hub_handler import HubHandler

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx", ".msgpack", ".h5")


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a regular file (what the Hub reports as ``blobId`` / ``oid`` / ``ETag``)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    """The git-lfs pointer file committed in git in place of an LFS file."""
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n".encode()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # URL-decoded path, no query
    query: str
    range: str | None
    headers: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """Serve ``repo_dir`` as model repo ``repo_id`` on ``http://<host, default 127.0.0.1>:<free port>``."""

    def __init__(
        self,
        repo_dir: str | Path | None = None,
        repo_id: str = "org/tiny",
        *,
        lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES,
        host: str = "127.0.0.1",
    ) -> None:
        self.repo_id = repo_id
        self.host = host
        self.lfs_suffixes = lfs_suffixes
        self.files: dict[str, bytes] = {}
        if repo_dir is not None:
            root = Path(repo_dir)
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    self.files[p.relative_to(root).as_posix()] = p.read_bytes()
        self.lfs_files: set[str] = set()  # extra paths to treat as LFS regardless of suffix
        self.corrupt: set[str] = set()
        self.gated = False
        self.extra_siblings: list[dict[str, object]] = []
        self.extra_tree: list[dict[str, object]] = []
        self.sibling_overrides: dict[str, dict[str, object]] = {}
        self.tree_overrides: dict[str, dict[str, object]] = {}
        self.etags: dict[str, str] = {}
        self.lengths: dict[str, int] = {}
        self.redirect_to: str | None = None
        self.listed: list[dict[str, object]] = []
        self.page_size = 1000
        self.tokens: dict[str, str] = {}
        self.gate: str | None = None
        self.private = False
        self.granted: set[str] = set()
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._stalls: dict[str, int] = {}
        self.requests: list[RecordedRequest] = []
        self._cuts: dict[str, list[int]] = {}  # path -> [after, remaining times]
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- configuration -------------------------------------------------------------------------------------------

    def cut_file(self, path: str, *, after: int, times: int = 1) -> None:
        """Close the connection after ``after`` body bytes on the next ``times`` GETs of ``path``."""
        with self._lock:
            self._cuts[path] = [after, times]

    def stall_file(self, path: str, *, after: int) -> None:
        """The next GET of ``path`` pauses after ``after`` body bytes (``stalled`` set) until ``release`` is set."""
        with self._lock:
            self._stalls[path] = after

    def take_stall(self, path: str) -> int | None:
        with self._lock:
            return self._stalls.pop(path, None)

    def is_lfs(self, path: str) -> bool:
        return path in self.lfs_files or path.endswith(self.lfs_suffixes)

    @property
    def commit(self) -> str:
        """A stable 40-hex commit id derived from the repo content."""
        h = hashlib.sha1()
        for path in sorted(self.files):
            h.update(path.encode() + b"\0" + hashlib.sha256(self.files[path]).digest())
        return h.hexdigest()

    def etag(self, path: str) -> str:
        content = self.files[path]
        if path in self.etags:
            return self.etags[path]
        return hashlib.sha256(content).hexdigest() if self.is_lfs(path) else git_blob_sha1(content)

    def gets_of(self, path: str) -> list[RecordedRequest]:
        """Recorded GETs of ``path``'s body (resolve route)."""
        return [r for r in self.file_gets() if r.path.partition("/resolve/")[2].partition("/")[2] == path]

    def file_gets(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path]

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "FakeHub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        handler = type("BoundHubHandler", (HubHandler,), {"fake_hub": self})
        self._server = ThreadingHTTPServer((self.host, 0), handler)
        self._server.daemon_threads = True
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()  # a stalled response ends, so the server can shut down
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- payloads ------------------------------------------------------------------------------------------------

    def sibling(self, path: str, blobs: bool) -> dict[str, object]:
        entry: dict[str, object] = {"rfilename": path}
        if blobs:
            content = self.files[path]
            entry["size"] = len(content)
            if self.is_lfs(path):
                pointer = lfs_pointer(content)
                entry["blobId"] = git_blob_sha1(pointer)
                entry["lfs"] = {
                    "sha256": hashlib.sha256(content).hexdigest(),
                    "size": len(content),
                    "pointerSize": len(pointer),
                }
            else:
                entry["blobId"] = git_blob_sha1(content)
        return {**entry, **self.sibling_overrides.get(path, {})}

    def tree_entry(self, path: str) -> dict[str, object]:
        content = self.files[path]
        if self.is_lfs(path):
            pointer = lfs_pointer(content)
            sha = hashlib.sha256(content).hexdigest()
            lfs = {"oid": sha, "size": len(content), "pointerSize": len(pointer)}
            entry = {"type": "file", "oid": git_blob_sha1(pointer), "size": len(content), "path": path, "lfs": lfs}
        else:
            entry = {"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": path}
        return {**entry, **self.tree_overrides.get(path, {})}

    def tree(self, prefix: str) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        dirs: set[str] = set()
        for path in sorted(self.files):
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            parts = path.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs and (not prefix or d.startswith(prefix.rstrip("/") + "/")):
                    dirs.add(d)
                    oid = hashlib.sha1(d.encode()).hexdigest()
                    out.append({"type": "directory", "oid": oid, "size": 0, "path": d})
            out.append(self.tree_entry(path))
        return out + list(self.extra_tree)

    def body_for(self, path: str) -> bytes:
        content = self.files[path]
        if path in self.corrupt and content:
            mid = len(content) // 2
            content = content[:mid] + bytes([content[mid] ^ 0xFF]) + content[mid + 1 :]
        return content

    def take_cut(self, path: str) -> int | None:
        with self._lock:
            cut = self._cuts.get(path)
            if cut is None or cut[1] <= 0:
                return None
            cut[1] -= 1
            return cut[0]


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A running FakeHub serving an empty ``org/tiny``; tests fill ``fake_hub.files`` before downloading.

    Use it from a conftest with ``from tests.hub_server import fake_hub`` (or build ``FakeHub(repo_dir)`` directly).
    """
    with FakeHub(None) as hub:
        yield hub
