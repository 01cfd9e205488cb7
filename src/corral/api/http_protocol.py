"""The HTTP/1.1 protocol `corral serve` runs under uvicorn: its httptools protocol with a bound on each
request's head (request line + header fields). httptools has no limit of its own, so a client could
make the server hold megabytes of headers per connection; past MAX_HEAD_BYTES, or MAX_HEADER_FIELDS
fields, the client gets 431 in OpenAI's error shape and the connection is closed, before the app runs
(the body has its own limit: ``guard.Guard``'s max_body)."""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corral.api.errors import error_body

log = logging.getLogger("corral.api")

MAX_HEAD_BYTES = 64 * 1024  # nginx reads up to 32 KB, h11 16 KB; room for long cookies and tokens
MAX_HEADER_FIELDS = 100  # as Apache and gunicorn


class HeadTooLarge(Exception):
    """Raised in a parser callback; httptools reports it as a parse error, answered 431 here."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; the bytes of a request's head are fed to the parser no further
    than the limit (the body and later bytes pass as before)."""

    max_head_bytes = MAX_HEAD_BYTES
    max_header_fields = MAX_HEADER_FIELDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn
        self._in_head, self._head_bytes, self._fields = True, 0, 0
        self._refusal: str | None = None
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        while self._in_head and data and self._open():
            room = self.max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse(f"the request's head (request line and headers) is larger than {self.max_head_bytes} "
                             "bytes")
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
        if data and self._open():
            super().data_received(data)

    def _open(self) -> bool:
        """Still this protocol's connection (not closed, not handed to a WebSocket protocol)."""
        return not self.transport.is_closing() and self.transport.get_protocol() is self

    def on_message_begin(self) -> None:
        self._in_head = True  # the bytes counted since the last head ended count toward this one
        super().on_message_begin()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next on a kept-alive connection is the next request's head

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.max_header_fields:
            self._refusal = f"the request has more than {self.max_header_fields} header fields"
            raise HeadTooLarge(self._refusal)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._fields = False, 0, 0
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # the parse error is ours: too many header fields
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse(self, message: str) -> None:
        """Answer 431 and close; only close when an earlier (pipelined) request is still being answered."""
        log.warning("refused a request from %s: %s", self.client, message)
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps(error_body(431, message)).encode()
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        self.transport.close()
