"""ASGI middleware in front of every route: Host/Origin allow-list (DNS-rebinding defence),
bearer-key auth, and draining (503 while the server shuts down). Pure ASGI, so streaming
responses pass through untouched."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from corral.api.errors import error_body

Scope = dict[str, Any]
OPEN_PATHS = frozenset({"/health", "/ready"})  # probes answer without a key
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass
class ServerState:
    draining: bool = False
    in_flight: int = 0
    ready: bool = False
    extra_allowed: set[str] = field(default_factory=set)


def host_name(value: str) -> str:
    """'example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    def __init__(self, app: Any, *, allowed_hosts: Iterable[str], api_keys: Iterable[str],
                 state: ServerState) -> None:
        self.app = app
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
            await self._reply(send, 403, f"host {host!r} is not allowed; add it with --allowed-host")
            return
        origin = headers.get("origin")
        if origin and not self.any_host:
            origin_host = (urlsplit(origin).hostname or "").lower()
            if origin_host not in self.allowed:
                await self._reply(send, 403, f"origin {origin!r} is not allowed; add its host with --allowed-host")
                return
        if self.keys and path not in OPEN_PATHS and not self._authorized(headers.get("authorization", "")):
            await self._reply(send, 401, "missing or invalid API key; send 'Authorization: Bearer <key>'",
                              extra=[(b"www-authenticate", b"Bearer")])
            return
        if self.state.draining and path not in OPEN_PATHS and path != "/metrics":
            await self._reply(send, 503, "the server is shutting down", extra=[(b"retry-after", b"5")])
            return
        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        return any(hmac.compare_digest(given, key) for key in self.keys)

    @staticmethod
    async def _reply(send: Any, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps(error_body(status, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *(extra or [])]})
        await send({"type": "http.response.body", "body": body})
