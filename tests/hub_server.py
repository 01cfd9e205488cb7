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
* ``hub.gated = True``: answer 401 ``GatedRepo`` on every repo route.

Every request is recorded in ``hub.requests`` (method, path, query, Range header).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

import pytest

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
    """Serve ``repo_dir`` as model repo ``repo_id`` on ``http://127.0.0.1:<free port>``."""

    def __init__(
        self,
        repo_dir: str | Path | None = None,
        repo_id: str = "org/tiny",
        *,
        lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES,
    ) -> None:
        self.repo_id = repo_id
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
        handler = type("BoundHubHandler", (_HubHandler,), {"fake_hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
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
        return entry

    def tree_entry(self, path: str) -> dict[str, object]:
        content = self.files[path]
        if self.is_lfs(path):
            pointer = lfs_pointer(content)
            sha = hashlib.sha256(content).hexdigest()
            lfs = {"oid": sha, "size": len(content), "pointerSize": len(pointer)}
            return {"type": "file", "oid": git_blob_sha1(pointer), "size": len(content), "path": path, "lfs": lfs}
        return {"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": path}

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
        return out

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


class _HubHandler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- plumbing ------------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, head: bool = False
    ) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, payload: object, *, head: bool, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send(200, body, {"Content-Type": "application/json", **(headers or {})}, head=head)

    def _error(self, status: int, code: str | None, message: str, *, head: bool) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if code == "EntryNotFound":  # the Hub tells which commit the file is missing from
            headers["X-Repo-Commit"] = self.fake_hub.commit
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _dispatch(self, *, head: bool) -> None:
        hub = self.fake_hub
        split = urlsplit(self.path)
        path = unquote(split.path)
        with hub._lock:
            hub.requests.append(
                RecordedRequest(self.command, path, split.query, self.headers.get("Range"), dict(self.headers.items()))
            )
        api_prefix = f"/api/models/{hub.repo_id}"
        resolve_prefix = f"/{hub.repo_id}/resolve/"
        raw = split.path  # keep %2F inside revisions intact for splitting
        if path == api_prefix or path.startswith(api_prefix + "/"):
            if hub.gated:
                return self._error(401, "GatedRepo", "Access to this model is restricted.", head=head)
            rest = raw[len("/api/models/") + len(hub.repo_id) :].lstrip("/")
            return self._api(rest, split.query, head=head)
        if path.startswith(resolve_prefix):
            if hub.gated:
                return self._error(401, "GatedRepo", "Access to this model is restricted.", head=head)
            rest = raw[len("/") + len(hub.repo_id) + len("/resolve/") :]
            rev, _, file_path = rest.partition("/")
            return self._resolve(unquote(rev), unquote(file_path), head=head)
        if path.startswith("/api/models/") or "/resolve/" in path:
            return self._error(404, "RepoNotFound", "Repository not found", head=head)
        return self._error(404, None, "Not found", head=head)

    def _check_rev(self, rev: str, *, head: bool) -> bool:
        if rev in ("main", self.fake_hub.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
        return False

    # -- routes --------------------------------------------------------------------------------------------------

    def _api(self, rest: str, query: str, *, head: bool) -> None:
        hub = self.fake_hub
        parts = rest.split("/") if rest else []
        if not parts or parts[0] == "revision":
            rev = unquote(parts[1]) if len(parts) > 1 else "main"
            if not self._check_rev(rev, head=head):
                return
            blobs = "blobs=true" in query.lower()
            return self._json(
                {
                    "_id": hashlib.sha1(hub.repo_id.encode()).hexdigest()[:24],
                    "id": hub.repo_id,
                    "modelId": hub.repo_id,
                    "author": hub.repo_id.split("/")[0],
                    "sha": hub.commit,
                    "lastModified": "2024-01-01T00:00:00.000Z",
                    "createdAt": "2024-01-01T00:00:00.000Z",
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": [hub.sibling(p, blobs) for p in sorted(hub.files)],
                },
                head=head,
            )
        if parts[0] == "tree" and len(parts) > 1:
            rev = unquote(parts[1])
            if not self._check_rev(rev, head=head):
                return
            return self._json(hub.tree(unquote("/".join(parts[2:]))), head=head)
        self._error(404, None, "Not found", head=head)

    def _resolve(self, rev: str, file_path: str, *, head: bool) -> None:
        hub = self.fake_hub
        if not self._check_rev(rev, head=head):
            return
        if file_path not in hub.files:
            return self._error(404, "EntryNotFound", f"{file_path} does not exist", head=head)
        body = hub.body_for(file_path)
        total = len(body)
        etag = hub.etag(file_path)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "X-Repo-Commit": hub.commit,
            "ETag": f'"{etag}"',
        }
        if hub.is_lfs(file_path):
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(total)
        status, start, end = 200, 0, total - 1
        range_header = self.headers.get("Range")
        if range_header and not head:
            parsed = _parse_range(range_header, total)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{total}"
                return self._send(416, b"", headers)
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        payload = body[start : end + 1]
        headers["Content-Length"] = str(len(payload))
        cut = None if head else hub.take_cut(file_path)
        if cut is None:
            return self._send(status, payload, headers, head=head)
        # Fault: full headers, then only `cut` bytes, then slam the connection shut.
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload[:cut])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may already be gone
            self.connection.shutdown(socket.SHUT_RDWR)


def _parse_range(value: str, total: int) -> tuple[int, int] | None:
    unit, _, spec = value.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if not first:  # suffix range: last N bytes
            n = int(last)
            start, end = max(total - n, 0), total - 1
        else:
            start = int(first)
            end = int(last) if last else total - 1
    except ValueError:
        return None
    if start >= total or start > end:
        return None
    return start, min(end, total - 1)


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A running FakeHub serving an empty ``org/tiny``; tests fill ``fake_hub.files`` before downloading.

    Use it from a conftest with ``from tests.hub_server import fake_hub`` (or build ``FakeHub(repo_dir)`` directly).
    """
    with FakeHub(None) as hub:
        yield hub
