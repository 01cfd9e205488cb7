"""The request side of the stand-in Hub (tests/hub_server.py): the HTTP handler that answers the
``huggingface_hub`` client's API, ``resolve`` and range requests from a :class:`FakeHub`'s files and
scripted faults; the models listing, whoami and gated / private refusals come from tests/hub_models_api.py."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from tests import hub_models_api as models_api

if TYPE_CHECKING:
    from tests.hub_server import FakeHub


class HubHandler(BaseHTTPRequestHandler):
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
        from tests.hub_server import RecordedRequest  # the hub module imports this one

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
        if path in ("/api/models", "/api/whoami-v2"):
            return self._account(path, split.query, head=head)
        token, site = models_api.bearer(self.headers), f"http://{self.headers.get('Host', '')}"
        if path == api_prefix or path.startswith(api_prefix + "/"):
            if hub.gated:
                return self._error(401, "GatedRepo", "Access to this model is restricted.", head=head)
            if refused := models_api.refusal(hub, token, files=False, site=site):
                return self._answer(refused, head=head)
            rest = raw[len("/api/models/") + len(hub.repo_id) :].lstrip("/")
            return self._api(rest, split.query, head=head)
        if path.startswith(resolve_prefix):
            if hub.gated:
                return self._error(401, "GatedRepo", "Access to this model is restricted.", head=head)
            if refused := models_api.refusal(hub, token, files=True, site=site):
                return self._answer(refused, head=head)
            rest = raw[len("/") + len(hub.repo_id) + len("/resolve/") :]
            rev, _, file_path = rest.partition("/")
            return self._resolve(unquote(rev), unquote(file_path), head=head)
        if path.startswith("/api/models/") or "/resolve/" in path:
            return self._error(404, "RepoNotFound", "Repository not found", head=head)
        return self._error(404, None, "Not found", head=head)

    def _answer(self, answer: models_api.Answer, *, head: bool) -> None:
        status, payload, headers = answer
        body = json.dumps(payload).encode()
        self._send(status, body, {"Content-Type": "application/json", **headers}, head=head)

    def _account(self, path: str, query: str, *, head: bool) -> None:
        """The models listing and whoami (tests/hub_models_api.py)."""
        if path == "/api/whoami-v2":
            return self._answer(models_api.whoami(self.fake_hub, models_api.bearer(self.headers)), head=head)
        base = f"http://{self.headers.get('Host', '')}"
        return self._answer(models_api.list_models(self.fake_hub, query, base), head=head)

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
                    "private": hub.private,
                    "gated": hub.gate or False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": [hub.sibling(p, blobs) for p in sorted(hub.files)] + hub.extra_siblings,
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
            headers["X-Linked-Size"] = str(hub.lengths.get(file_path, total))
            if hub.redirect_to:  # the Hub sends LFS bodies from another host (its CDN)
                headers["Location"] = hub.redirect_to + self.path
                return self._send(302, b"", headers, head=head)
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
        if status == 200 and file_path in hub.lengths:  # Fault: a length that is not the body's
            headers["Content-Length"] = str(hub.lengths[file_path])
            if not head:
                return self._send_then_close(status, payload, headers)
        stall = None if head else hub.take_stall(file_path)
        if stall is not None:
            return self._send_then_close(status, payload, headers, pause_at=stall)
        cut = None if head else hub.take_cut(file_path)
        if cut is None:
            return self._send(status, payload, headers, head=head)
        self._send_then_close(status, payload[:cut], headers)  # Fault: full headers, `cut` bytes, connection shut

    def _send_then_close(self, status: int, body: bytes, headers: dict[str, str], *, pause_at: int = -1) -> None:
        """Headers as given, then ``body`` (with ``pause_at``: that many bytes, ``stalled`` set, a wait for
        ``release``, the rest), then the connection closed."""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        parts = [body] if pause_at < 0 else [body[:pause_at], body[pause_at:]]
        with contextlib.suppress(OSError):  # the client may be gone (killed)
            for i, part in enumerate(parts):
                if i:
                    self.fake_hub.stalled.set()
                    self.fake_hub.release.wait(60)
                self.wfile.write(part)
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
