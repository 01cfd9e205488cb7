"""Media fetched from ``http(s)`` URLs, only for a server started with ``--allow-remote-media``, and
never as a proxy into the network it sits on (SSRF): the URL is parsed once and its host resolved
once; every address it resolves to is checked (loopback, private, link-local, carrier-grade NAT,
multicast, reserved and unspecified addresses, and IPv4 addresses mapped into IPv6, are refused
unless the operator allowed their network with ``--allow-media-network``); the connection goes to
the checked address, with the URL's host as the Host header and TLS name (no second lookup that a
rebinding DNS server could answer differently); no redirect is followed; no proxy from the
environment is used; the body is bounded and the whole fetch has a deadline. Errors name the host,
never the full URL (a query string may hold a token)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from corral.media import BadMediaError, MediaTooLargeError, decode_image, media_bytes, url_scheme

if TYPE_CHECKING:
    from corral.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
ENABLE_HINT = "send the image as a data: URL (base64), or start the server with --allow-remote-media"


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives ``host`` (one lookup)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class RemoteMedia:
    """What a door may fetch: off unless enabled; public addresses, plus ``networks`` if named."""

    enabled: bool = False
    networks: tuple[Network, ...] = ()
    max_bytes: int = 64 * 1024 * 1024
    timeout: float = 20.0
    resolve: Resolver = system_resolve

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteMedia:
        return cls(settings.runtime.allow_remote_media, parse_networks(settings.runtime.media_networks),
                   max_bytes=settings.server.max_body)

    def allows(self, address: Address) -> bool:
        """Whether the address (and any IPv4 address embedded in an IPv6 one) may be fetched from."""
        if any(address in net for net in self.networks):
            return True
        return all(a.is_global and not a.is_multicast for a in _forms(address))

    async def fetch(self, url: str) -> bytes:
        """The body at ``url``, or a BadMediaError / MediaTooLargeError saying why not."""
        if not self.enabled:
            raise BadMediaError("the image is a URL, and this server does not fetch remote media", ENABLE_HINT)
        target = _Target.parse(url)
        address = await self._checked_address(target)
        try:
            return await asyncio.wait_for(self._get(target, address), self.timeout)
        except TimeoutError:
            raise BadMediaError(f"fetching the image from {target.host} took longer than {self.timeout:g}s") from None

    async def _checked_address(self, target: _Target) -> Address:
        try:
            found = [ipaddress.ip_address(target.host)]
        except ValueError:
            try:
                found = [ipaddress.ip_address(a.split("%")[0]) for a in await self.resolve(target.host, target.port)]
            except OSError:
                raise BadMediaError(f"the image's host {target.host} does not resolve") from None
        refused = [a for a in found if not self.allows(a)]
        if refused or not found:
            raise BadMediaError(
                f"the image's host {target.host} is {refused[0] if refused else 'no address'}, an address corral "
                "does not fetch from (loopback, private, link-local or reserved)",
                "serve the image from a public address, send it as a data: URL, or allow that network with "
                "--allow-media-network")
        return found[0]

    async def _get(self, target: _Target, address: Address) -> bytes:
        import httpx

        host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        url = f"{target.scheme}://{host}:{target.port}{target.path}"
        headers = {"Host": target.host_header, "Accept": "image/*"}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=self.timeout) as client:
            try:
                async with client.stream("GET", url, headers=headers, extensions=extensions) as response:
                    return await self._body(target, response)
            except httpx.HTTPError as exc:
                raise BadMediaError(f"fetching the image from {target.host} failed: {type(exc).__name__}") from None

    async def _body(self, target: _Target, response: object) -> bytes:
        import httpx

        assert isinstance(response, httpx.Response)
        if response.is_redirect:
            raise BadMediaError(f"the image URL on {target.host} redirects (HTTP {response.status_code}); "
                                "corral does not follow redirects for media", "give the final URL")
        if response.status_code != 200:
            raise BadMediaError(f"fetching the image from {target.host} failed: HTTP {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise MediaTooLargeError(f"the image at {target.host} is {declared} bytes; the limit is {self.max_bytes}")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise MediaTooLargeError(f"the image at {target.host} is larger than {self.max_bytes} bytes")
        return bytes(body)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query
    host_header: str

    @classmethod
    def parse(cls, url: str) -> _Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise BadMediaError("the image URL cannot be parsed") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadMediaError("an image URL must be http(s)://host/... or a data: URL")
        if parts.username is not None or parts.password is not None:
            raise BadMediaError("an image URL must not carry a user name or password")
        default = 443 if parts.scheme == "https" else 80
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, host, port or default, path,
                   shown if port in (None, default) else f"{shown}:{port}")


async def load_image(url: str, remote: RemoteMedia, max_pixels: int) -> Any:
    """The decoded image a ``data:`` URL (or base64 text) holds, or, where ``remote`` allows, that an
    ``http(s)`` URL serves; decoded off the event loop."""
    data = await remote.fetch(url) if url_scheme(url) in ("http", "https") else media_bytes(url)
    return await asyncio.to_thread(decode_image, data, max_pixels=max_pixels)


def _forms(address: Address) -> list[Address]:
    """The address and the IPv4 addresses an IPv6 one carries (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    found: list[Address] = [address]
    teredo = address.teredo
    for embedded in (address.ipv4_mapped, address.sixtofour, teredo[1] if teredo else None):
        if embedded is not None:
            found.append(embedded)
    if address in ipaddress.ip_network("64:ff9b::/96"):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def parse_networks(values: list[str]) -> tuple[Network, ...]:
    """Networks from ``10.0.0.0/8``-style text (a bare address is a one-address network)."""
    from corral.errors import ConfigError

    found: list[Network] = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"cannot read the network {value!r}", "write e.g. 10.0.0.0/8 or 192.168.1.20") from None
    return tuple(found)
