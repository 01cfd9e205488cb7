"""Remote media (``--allow-remote-media``) cannot reach what the server can reach: off by default;
loopback, private, link-local, CGNAT, multicast and unspecified addresses, and IPv4 addresses hidden
in IPv6 forms, are refused before any connection; a name is resolved once and the connection goes to
the checked address with the name as Host; no redirect is followed; the body is bounded; a silent
server times out. Real sockets: a local HTTP server on 127.0.0.1, reachable only where a test allows
127.0.0.1/32 explicitly."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from corral.media import BadMediaError, MediaTooLargeError
from corral.remote_media import RemoteMedia, parse_networks

BODY = b"\x89PNG pretend image bytes" * 100
LOCAL = parse_networks(["127.0.0.1/32"])


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []  # noqa: RUF012 (the test server's record of (path, Host))

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Host", "")))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/image.png")
            self.end_headers()
        elif self.path == "/missing":
            self.send_error(404)
        elif self.path == "/chunked":  # no Content-Length: the limit applies while reading
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY * 10)
            self.close_connection = True
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def fetch(media: RemoteMedia, url: str) -> bytes:
    return asyncio.run(media.fetch(url))


def test_off_unless_enabled_and_the_error_names_the_flag(server: str) -> None:
    with pytest.raises(BadMediaError, match="does not fetch remote media") as err:
        fetch(RemoteMedia(networks=LOCAL), f"http://{server}/image.png")
    assert "--allow-remote-media" in (err.value.hint or "")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "::ffff:127.0.0.1", "fe80::1",
                                     "fc00::1", "2002:7f00:1::", "64:ff9b::a00:1", "::"])
def test_internal_addresses_are_refused(address: str) -> None:
    media = RemoteMedia(enabled=True)
    assert not media.allows(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(BadMediaError, match="does not fetch from") as err:
        fetch(media, f"http://{host}:9/x.png")  # refused before connecting: nothing listens on port 9
    assert "--allow-media-network" in (err.value.hint or "")


def test_public_addresses_are_allowed_and_a_named_network_is_added() -> None:
    media = RemoteMedia(enabled=True)
    assert media.allows(ipaddress.ip_address("8.8.8.8")) and media.allows(ipaddress.ip_address("2606:4700::1"))
    allowed = RemoteMedia(enabled=True, networks=parse_networks(["10.0.0.0/8"]))
    assert allowed.allows(ipaddress.ip_address("10.9.9.9")) and not allowed.allows(ipaddress.ip_address("172.20.0.1"))
    assert not allowed.allows(ipaddress.ip_address("127.0.0.1"))


def test_a_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(BadMediaError, match=r"localhost is (127\.0\.0\.1|::1)"):
        fetch(RemoteMedia(enabled=True), "http://localhost:9/x.png")


def test_one_internal_answer_among_public_ones_refuses_the_name() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(BadMediaError, match=r"10\.0\.0\.7"):
        fetch(RemoteMedia(enabled=True, resolve=resolve), "https://images.example/x.png")


def test_an_allowed_fetch_connects_to_the_checked_address_with_the_name_as_host(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    lookups: list[str] = []

    async def resolve(host: str, wanted: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    media = RemoteMedia(enabled=True, networks=LOCAL, resolve=resolve)
    assert fetch(media, f"http://images.example:{port}/image.png?token=abc") == BODY
    assert lookups == ["images.example"]  # one lookup; the connection went to the address it gave
    assert _Handler.seen[-1] == ("/image.png?token=abc", f"images.example:{port}")
    assert fetch(RemoteMedia(enabled=True, networks=LOCAL), f"http://{server}/image.png") == BODY


def test_redirects_errors_and_size_limits(server: str) -> None:
    media = RemoteMedia(enabled=True, networks=LOCAL)
    with pytest.raises(BadMediaError, match="redirects"):
        fetch(media, f"http://{server}/redirect")
    assert _Handler.seen[-1][0] == "/redirect"  # the redirect's target was never asked for
    with pytest.raises(BadMediaError, match="HTTP 404"):
        fetch(media, f"http://{server}/missing")
    small = RemoteMedia(enabled=True, networks=LOCAL, max_bytes=len(BODY) - 1)
    with pytest.raises(MediaTooLargeError):
        fetch(small, f"http://{server}/image.png")  # refused from Content-Length
    with pytest.raises(MediaTooLargeError):
        fetch(RemoteMedia(enabled=True, networks=LOCAL, max_bytes=len(BODY) * 2), f"http://{server}/chunked")


@pytest.mark.parametrize("url", ["ftp://example.com/x.png", "http://user:pw@example.com/x.png", "http:///x.png",
                                 "http://example.com:99999/x.png"])
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(BadMediaError):
        fetch(RemoteMedia(enabled=True), url)


def test_a_silent_server_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        media = RemoteMedia(enabled=True, networks=LOCAL, timeout=0.5)
        with pytest.raises(BadMediaError, match=r"longer than 0\.5s"):
            fetch(media, f"http://127.0.0.1:{listener.getsockname()[1]}/x.png")
    finally:
        listener.close()
