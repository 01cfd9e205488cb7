"""ASGI middleware in front of every route: Host/Origin allow-list (DNS-rebinding defence),
bearer-key auth (or Anthropic's ``x-api-key`` header), draining (503 while the server shuts down)
and the request body limit (413: at once from Content-Length, else when a chunked body passes it).
Pure ASGI, so streaming responses pass through untouched."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException

from corral.api.errors import error_body_for

Scope = dict[str, Any]
OPEN_PATHS = frozenset({"/health", "/ready", "/"})  # probes answer without a key ("/": Ollama's "is running")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_open(path: str) -> bool:
    """Paths served without a key: the probes, and the web UI's static files (a browser cannot send
    a key when it opens a page; the page asks for one and sends it with every API call)."""
    return path in OPEN_PATHS or path == "/ui" or path.startswith("/ui/")


@dataclass
class ServerState:
    draining: bool = False
    in_flight: int = 0
    ready: bool = False
    extra_allowed: set[str] = field(default_factory=set)
    # beside this process, what else must be up before /ready says so (None: nothing); returns why
    # not, or None when all is up. `corral serve --ray`: every replica of the deployment.
    peers: Callable[[], Awaitable[str | None]] | None = None


def host_name(value: str) -> str:
    """'example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BodyTooLargeError(HTTPException):
    """A body that passed the limit while the app read it: an HTTPException because FastAPI's body
    parsing lets only those through (any other error there turns into a 400), rendered as a 413 in the
    route's API shape by ``errors.install``."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes; send less (--max-body)")


def limited(receive: Any, limit: int) -> Any:
    """``receive``, raising BodyTooLargeError once the body read so far passes ``limit`` bytes."""
    seen = [0]

    async def wrapped() -> Any:
        message = await receive()
        if message.get("type") == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                raise BodyTooLargeError(limit)
        return message
    return wrapped


class Guard:
    def __init__(self, app: Any, *, allowed_hosts: Iterable[str], api_keys: Iterable[str],
                 state: ServerState, max_body: int = 64 * 1024 * 1024) -> None:
        self.app, self.max_body = app, max_body
        self.allowed = {host_name(h) for h in allowed_hosts} | LOOPBACK_NAMES
        self.any_host = "*" in self.allowed
        self.keys = [k.encode() for k in api_keys if k]
        self.state = state

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        host = host_name(headers.get("host", ""))
        if not self.any_host and host not in self.allowed:
            await self._reply(send, path, 403, f"host {host!r} is not allowed; add it with --allowed-host")
            return
        origin = headers.get("origin")
        if origin and not self.any_host:
            origin_host = (urlsplit(origin).hostname or "").lower()
            if origin_host not in self.allowed:
                await self._reply(send, path, 403,
                                  f"origin {origin!r} is not allowed; add its host with --allowed-host")
                return
        if self.keys and not is_open(path) and not self._authorized(headers.get("authorization", ""),
                                                                     headers.get("x-api-key", "")):
            await self._reply(send, path, 401, "missing or invalid API key; send 'Authorization: Bearer <key>' "
                              "(or 'x-api-key: <key>')", extra=[(b"www-authenticate", b"Bearer")])
            return
        if self.state.draining and path not in OPEN_PATHS and path != "/metrics":
            await self._reply(send, path, 503, "the server is shutting down", extra=[(b"retry-after", b"5")])
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await self._reply(send, path, 413, f"the request body is {length} bytes; the limit is {self.max_body}")
            return
        self.state.in_flight += 1
        try:
            await self.app(scope, limited(receive, self.max_body), send)
        finally:
            self.state.in_flight -= 1

    def _authorized(self, header: str, api_key: str = "") -> bool:
        """A bearer key, or Anthropic's ``x-api-key`` header, equal to one of the keys (constant time)."""
        scheme, _, token = header.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" and token else api_key.strip()
        if not given:
            return False
        return any(hmac.compare_digest(given.encode(), key) for key in self.keys)

    @staticmethod
    async def _reply(send: Any, path: str, status: int, message: str,
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps(error_body_for(path, status, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *(extra or [])]})
        await send({"type": "http.response.body", "body": body})
