"""A stand-in Anthropic Messages API on 127.0.0.1 (what the official ``anthropic`` SDK reads):
``POST /v1/messages`` streamed as Anthropic's event stream (``message_start`` with the input tokens,
``content_block_start``, ``ping``, a ``content_block_delta`` per word, ``content_block_stop``,
``message_delta`` with the stop reason and output tokens, ``message_stop``), ``GET /v1/models``
(free). Faults, one per billed request: ``("status", 529)`` (``overloaded_error``), ``("status",
401)``, ``("overloaded", 2)`` (an ``event: error`` after two words), ``("ok",)``. The key arrives in
``x-api-key`` or, from the 2.x SDK, as a bearer token; both are recorded as ``key``."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.gateway.standin_openai import StandIn, WireHandler

ERRORS = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 500: "api_error",
          529: "overloaded_error"}


def anthropic_standin(name: str, reply: str | None = None) -> StandIn:
    return StandIn(name, reply, wire=_handler, api_root="")


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(WireHandler):
        def do_GET(self) -> None:
            standin.requests.append({"method": "GET", "path": self.path, "key": self._key()})
            models = [{"type": "model", "id": i, "display_name": i, "created_at": "2025-10-01T00:00:00Z"}
                      for i in ("claude-haiku-4-5", "claude-sonnet-4-5")]
            self._json(200, {"data": models, "has_more": False, "first_id": models[0]["id"],
                             "last_id": models[-1]["id"]})

        def do_POST(self) -> None:
            body = self.body()
            standin.requests.append({"method": "POST", "path": self.path, "body": body,
                                     "key": self._key()})
            fault = standin.next_fault()
            if fault is not None and fault[0] == "status":
                kind = ERRORS.get(fault[1], "api_error")
                self._json(fault[1], {"type": "error", "error": {"type": kind, "message": f"injected {kind}"}})
                return
            self.start_chunked("text/event-stream")
            words = standin.words()[: body.get("max_tokens") or None]
            self._event("message_start", {"type": "message_start", "message": {
                "id": "msg_standin", "type": "message", "role": "assistant", "content": [], "model": body["model"],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 1}}})
            self._event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})
            self._event("ping", {"type": "ping"})
            for i, word in enumerate(words):
                if fault is not None and fault[0] == "overloaded" and i == fault[1]:
                    self._event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                     "message": "Overloaded"}})
                    self._chunk(b"")
                    return
                self._event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": word}})
            self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
            stop = "max_tokens" if body.get("max_tokens") and len(words) < len(standin.words()) else "end_turn"
            self._event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop,
                                                                             "stop_sequence": None},
                                          "usage": {"output_tokens": len(words)}})
            self._event("message_stop", {"type": "message_stop"})
            self._chunk(b"")

        def _key(self) -> str | None:
            """The key, as ``x-api-key`` or (the 2.x SDK) ``Authorization: Bearer``."""
            bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            return self.headers.get("x-api-key") or bearer or None

        def _event(self, name: str, data: dict[str, Any]) -> None:
            self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

    return Handler
