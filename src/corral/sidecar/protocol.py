"""JSON-RPC 2.0 framed as NDJSON: parsing one line into a request or notification (each failure
its JSON-RPC error), the messages corral writes, and a reader that splits a byte stream into lines
no longer than a limit (a longer one is skipped to its end and reported, never buffered whole)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
CORRAL_ERROR = -32000  # a corral error: its message, with type, hint and HTTP-equivalent status in data
REQUEST_CANCELLED = -32800  # as LSP's RequestCancelled

RequestId = int | str


class RpcError(Exception):
    """A JSON-RPC error answer: ``code``, ``message`` and optional ``data``, for request ``id``."""

    def __init__(self, code: int, message: str, data: Any = None, *, id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data, self.id = code, message, data, id


@dataclass(frozen=True)
class Incoming:
    """A request (``id`` set) or a notification (``id`` None) with by-name params."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    id: RequestId | None = None

    @property
    def is_notification(self) -> bool:
        return self.id is None


def _valid_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def parse(line: bytes) -> Incoming:
    """One NDJSON line -> Incoming; otherwise an RpcError carrying the id when one could be read. JSON
    nested past the parser's depth is a parse error, a lone surrogate in the params invalid params."""
    from corral.errors import ParameterError
    from corral.wire import check_text, loads

    try:
        message = loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RpcError(PARSE_ERROR, f"parse error: the line is not JSON ({exc})") from None
    if isinstance(message, list):
        raise RpcError(INVALID_REQUEST, "invalid request: batches are not supported; send one message per line")
    if not isinstance(message, dict):
        raise RpcError(INVALID_REQUEST, "invalid request: a message is a JSON object")
    raw_id = message.get("id")
    rid = raw_id if _valid_id(raw_id) else None
    if "id" in message and raw_id is not None and rid is None:
        raise RpcError(INVALID_REQUEST, "invalid request: id must be a string or an integer")
    if message.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', id=rid)
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, 'invalid request: "method" must be a non-empty string', id=rid)
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "invalid params: params must be an object (by name)", id=rid)
    try:
        check_text(params)
    except ParameterError as exc:
        raise RpcError(INVALID_PARAMS, f"invalid params: {exc.message}", {"param": exc.param}, id=rid) from None
    return Incoming(method, params, rid)


def _line(message: dict[str, Any]) -> bytes:
    from corral.wire import dumps

    return dumps(message) + b"\n"


def result_line(id: RequestId, result: Any) -> bytes:
    return _line({"jsonrpc": "2.0", "id": id, "result": result})


def error_line(id: RequestId | None, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _line({"jsonrpc": "2.0", "id": id, "error": error})


def notification_line(method: str, params: dict[str, Any]) -> bytes:
    return _line({"jsonrpc": "2.0", "method": method, "params": params})


@dataclass(frozen=True)
class TooLong:
    """A line over the limit: skipped; ``size`` bytes of it were read and dropped."""

    size: int


class LineSplitter:
    """Bytes in, complete lines out (without the newline), none longer than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._skipping = 0  # > 0: inside an over-long line, this many bytes dropped so far

    def feed(self, data: bytes) -> Iterator[bytes | TooLong]:
        while data:
            end = data.find(b"\n")
            piece, data = (data, b"") if end < 0 else (data[:end], data[end + 1:])
            if self._skipping:
                self._skipping += len(piece)
            else:
                self._buffer += piece
                if len(self._buffer) > self.limit:
                    self._skipping, self._buffer = len(self._buffer), bytearray()
            if end < 0:
                return
            if self._skipping:
                yield TooLong(self._skipping)
                self._skipping = 0
            else:
                line, self._buffer = bytes(self._buffer), bytearray()
                if line.strip():
                    yield line

    def finish(self) -> Iterator[bytes | TooLong]:
        """At end of input: a last line without its newline."""
        if self._skipping:
            yield TooLong(self._skipping)
        elif self._buffer.strip():
            yield bytes(self._buffer)
        self._buffer, self._skipping = bytearray(), 0
