"""The sidecar's framing, in-process: lines parsed into requests and notifications (each malformed
message its JSON-RPC error, with the id when one could be read), lines split from a byte stream
whatever the chunking, an over-long line skipped to its end without being buffered whole, and
errors mapped to codes with corral's message and hint."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from corral.errors import BusyError, ModelNotFoundError, UsageError
from corral.protocols.openai.schemas import ChatCompletionBody
from corral.sidecar.protocol import (
    CORRAL_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    LineSplitter,
    RpcError,
    TooLong,
    error_line,
    parse,
    result_line,
)
from corral.sidecar.server import error_for


def test_request_and_notification() -> None:
    req = parse(b'{"jsonrpc": "2.0", "id": 7, "method": "chat", "params": {"model": "m"}}')
    assert (req.id, req.method, req.params, req.is_notification) == (7, "chat", {"model": "m"}, False)
    note = parse(b'{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "a"}}')
    assert note.is_notification and note.params == {"requestId": "a"}
    assert parse(b'{"jsonrpc": "2.0", "id": "x", "method": "initialize"}').params == {}


@pytest.mark.parametrize(("line", "code", "rid"), [
    (b"not json", PARSE_ERROR, None),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "x"', PARSE_ERROR, None),  # cut short
    (b"\xff\xfe", PARSE_ERROR, None),
    (b"[1, 2]", INVALID_REQUEST, None),  # batches are refused
    (b'"a string"', INVALID_REQUEST, None),
    (b'{"id": 3, "method": "chat"}', INVALID_REQUEST, 3),  # no "jsonrpc"
    (b'{"jsonrpc": "1.0", "id": 3, "method": "chat"}', INVALID_REQUEST, 3),
    (b'{"jsonrpc": "2.0", "id": 4}', INVALID_REQUEST, 4),  # no method
    (b'{"jsonrpc": "2.0", "id": 4, "method": ""}', INVALID_REQUEST, 4),
    (b'{"jsonrpc": "2.0", "id": 1.5, "method": "chat"}', INVALID_REQUEST, None),
    (b'{"jsonrpc": "2.0", "id": true, "method": "chat"}', INVALID_REQUEST, None),
    (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "chat"}', INVALID_REQUEST, None),
    (b'{"jsonrpc": "2.0", "id": 5, "method": "chat", "params": [1]}', INVALID_PARAMS, 5),
])
def test_malformed_messages(line: bytes, code: int, rid: int | None) -> None:
    with pytest.raises(RpcError) as caught:
        parse(line)
    assert (caught.value.code, caught.value.id) == (code, rid)
    assert caught.value.message


def test_answer_lines_are_one_json_line_each() -> None:
    import numpy as np

    line = result_line(1, {"text": "two\nlines", "vector": np.array([0.5, 1.0], dtype=np.float32)})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"jsonrpc": "2.0", "id": 1, "result": {"text": "two\nlines", "vector": [0.5, 1.0]}}
    err = json.loads(error_line(None, PARSE_ERROR, "bad"))
    assert err == {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": "bad"}}


def test_lines_split_across_reads() -> None:
    splitter = LineSplitter(limit=100)
    out = [*splitter.feed(b'{"a":'), *splitter.feed(b' 1}\n\n{"b": 2}\n{"c"'), *splitter.feed(b": 3}")]
    assert out == [b'{"a": 1}', b'{"b": 2}']
    assert list(splitter.finish()) == [b'{"c": 3}']  # a last line without its newline


def test_an_over_long_line_is_skipped_and_reported_then_reading_goes_on() -> None:
    splitter = LineSplitter(limit=10)
    out = [*splitter.feed(b"x" * 8), *splitter.feed(b"y" * 8), *splitter.feed(b"z" * 1000),
           *splitter.feed(b"\nshort\n")]
    assert out == [TooLong(1016), b"short"]
    assert splitter._buffer == bytearray()  # nothing of the long line kept
    assert [*splitter.feed(b"q" * 11)] == [] and list(splitter.finish()) == [TooLong(11)]


def test_errors_map_to_codes_with_corral_message_and_hint() -> None:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionBody.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                           "temperature": 5})
    code, message, data = error_for(caught.value)
    assert code == INVALID_PARAMS and data == {"param": "temperature"} and "temperature" in message
    code, message, data = error_for(ModelNotFoundError("no model named 'x'", "pull it"))
    assert (code, message) == (CORRAL_ERROR, "no model named 'x'")
    assert data == {"type": "ModelNotFoundError", "hint": "pull it", "status": 404}
    assert error_for(UsageError("input must be a string"))[0] == INVALID_PARAMS
    assert error_for(BusyError("queue full", retry_after=3, status=429))[2]["retry_after"] == 3
    assert error_for(KeyError("x"))[:2] == (INTERNAL_ERROR, "internal error: KeyError")
