"""A stand-in OpenAI-compatible upstream on 127.0.0.1: what a remote provider is to corral, since
none can be reached here. It speaks the real wire format the official ``openai`` SDK reads:

* ``POST /v1/chat/completions`` and ``/v1/completions``: JSON, or SSE (``stream: true``) sent with
  chunked transfer encoding, the same ``id`` and ``created`` in every chunk, a usage chunk with
  empty ``choices`` when ``stream_options.include_usage``, then ``data: [DONE]``;
* ``POST /v1/embeddings``: one vector per input (derived from the text, so answers are checkable);
* ``GET /v1/models``: the model list (free: ``billed`` does not count it).

The answer to a chat is the words of ``reply`` (default: ``"hello from NAME"``), one per chunk.
Faults, queued by the test and taken one per billed request (``standin.faults.append(...)``):
``("status", 500)``, ``("status", 429, {"Retry-After": "7"})``, ``("status", 401)``, ``("hang", s)``
(no answer for ``s`` seconds), ``("cut", 3)`` (three tokens, then the connection closes without the
last chunk), ``("stall", s)`` (three tokens, then silence for ``s`` seconds, no ``[DONE]``),
``("too_long",)`` (400 with OpenAI's context-length message), ``("ok",)`` (no fault: a placeholder in the queue).

``billed`` counts requests that would cost money (every POST); ``requests`` records each request's
method, path, JSON body and Authorization header. ``delay``: seconds each POST waits before it is
answered; ``max_in_flight``: the most POSTs seen at once."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 32 clients connecting at once must not wait for a SYN retry


class WireHandler(BaseHTTPRequestHandler):
    """What every stand-in's handler shares: HTTP/1.1 keep-alive, small writes sent at once, no
    request logging, chunked bodies and JSON answers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE writes go out at once (no 40 ms delayed-ACK stall)

    def log_message(self, *args: Any) -> None:
        pass

    def body(self) -> dict[str, Any]:
        parsed = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        return parsed if isinstance(parsed, dict) else {}

    def start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)


class StandIn:
    """``wire``: the handler factory of the wire format (OpenAI's by default); ``api_root``: where the
    API lives under the server's address (what ``url`` includes)."""

    def __init__(self, name: str = "upstream", reply: str | None = None, *,
                 wire: Callable[[StandIn], type[BaseHTTPRequestHandler]] | None = None, api_root: str = "/v1") -> None:
        self.name, self.reply, self.api_root = name, reply or f"hello from {name}", api_root
        self.wire = wire or _handler
        self.faults: list[tuple[Any, ...]] = []
        self.requests: list[dict[str, Any]] = []
        self.billed = 0
        self.delay, self.in_flight, self.max_in_flight = 0.0, 0, 0
        self.lock = threading.Lock()
        self.server = StandInServer(("127.0.0.1", 0), self.handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.api_root}"

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler speaking this stand-in's wire format."""
        return self.wire(self)

    def next_fault(self) -> tuple[Any, ...] | None:
        with self.lock:
            self.billed += 1
            return self.faults.pop(0) if self.faults else None

    def words(self) -> list[str]:
        words = self.reply.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(WireHandler):
        def do_GET(self) -> None:
            standin.requests.append({"method": "GET", "path": self.path,
                                     "authorization": self.headers.get("Authorization")})
            if self.path.rstrip("/") == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": "small", "object": "model", "created": 0,
                                                             "owned_by": standin.name}]})
            else:
                self._json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            with standin.lock:
                standin.in_flight += 1
                standin.max_in_flight = max(standin.max_in_flight, standin.in_flight)
            try:
                time.sleep(standin.delay)
                self._post()
            finally:
                with standin.lock:
                    standin.in_flight -= 1

        def _post(self) -> None:
            body = self.body()
            standin.requests.append({"method": "POST", "path": self.path, "body": body,
                                     "authorization": self.headers.get("Authorization")})
            fault = standin.next_fault()
            if fault is not None and self._fault(fault):
                return
            if self.path == "/v1/embeddings":
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                data = [{"object": "embedding", "index": i, "embedding": vector(text)} for i, text in enumerate(inputs)]
                self._json(200, {"object": "list", "data": data, "model": body["model"],
                                 "usage": {"prompt_tokens": sum(len(t.split()) for t in inputs),
                                           "total_tokens": sum(len(t.split()) for t in inputs)}})
            elif self.path in ("/v1/chat/completions", "/v1/completions"):
                self._answer(body, fault, chat=self.path.endswith("chat/completions"))
            else:
                self._json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})

        def _fault(self, fault: tuple[Any, ...]) -> bool:
            """Answers the request as the fault says; False for the stream faults, handled while streaming."""
            kind = fault[0]
            if kind == "status":
                status, headers = fault[1], (fault[2] if len(fault) > 2 else {})
                self._json(status, {"error": {"message": f"injected {status}", "type": "server_error"}}, headers)
                return True
            if kind == "too_long":
                self._json(400, {"error": {"message": "This model's maximum context length is 8 tokens",
                                           "type": "invalid_request_error", "code": "context_length_exceeded"}})
                return True
            if kind == "hang":
                time.sleep(fault[1])
                with contextlib.suppress(OSError):
                    self._json(500, {"error": {"message": "late", "type": "server_error"}})
                return True
            return False

        def _answer(self, body: dict[str, Any], fault: tuple[Any, ...] | None, chat: bool) -> None:
            words = standin.words()[: body.get("max_tokens") or None]
            usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
            head = {"id": "chatcmpl-standin", "created": 1700000000, "model": body["model"],
                    "object": "chat.completion.chunk" if chat else "text_completion"}
            if not body.get("stream"):
                choice = ({"message": {"role": "assistant", "content": "".join(words)}} if chat
                          else {"text": "".join(words)})
                self._json(200, {**head, "object": "chat.completion" if chat else "text_completion",
                                 "choices": [{"index": 0, "finish_reason": "stop", **choice}], "usage": usage})
                return
            self.start_chunked("text/event-stream")
            for i, word in enumerate(words):
                if fault is not None and i == 3:
                    if fault[0] == "cut":
                        self.wfile.flush()
                        self.connection.shutdown(2)  # no terminating chunk: the body is cut
                        return
                    if fault[0] == "stall":
                        time.sleep(fault[1])
                        return
                delta = {"content": word} if chat else None
                choice = {"index": 0, "finish_reason": None, **({"delta": delta} if chat else {"text": word})}
                self._event({**head, "choices": [choice]})
            last = {"index": 0, "finish_reason": "stop", **({"delta": {}} if chat else {"text": ""})}
            self._event({**head, "choices": [last]})
            if (body.get("stream_options") or {}).get("include_usage"):
                self._event({**head, "choices": [], "usage": usage})
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        def _event(self, data: dict[str, Any]) -> None:
            self._chunk(f"data: {json.dumps(data)}\n\n".encode())

    return Handler


def vector(text: str) -> list[float]:
    """A small vector that depends on the text (its length, its letters)."""
    return [float(len(text)), float(sum(map(ord, text)) % 97), 1.0]


@contextlib.contextmanager
def standins(*names: str) -> Iterator[list[StandIn]]:
    servers = [StandIn(n) for n in names]
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(s) for s in servers]
