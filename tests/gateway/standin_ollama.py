"""A stand-in Ollama server on 127.0.0.1 speaking its native API: ``POST /api/chat`` and
``/api/generate`` streamed as NDJSON (a line per word, then ``done: true`` with ``done_reason``,
``prompt_eval_count``, ``eval_count`` and the durations), ``POST /api/embed``, ``GET /api/tags``
(free). Faults, one per billed request: ``("status", 500)``, ``("status", 404)`` (Ollama's "model
not found"), ``("error_line", 2)`` (an ``{"error": ...}`` line after two words), ``("ok",)``."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.gateway.standin_openai import StandIn, WireHandler, vector


def ollama_standin(name: str, reply: str | None = None) -> StandIn:
    return StandIn(name, reply, wire=_handler, api_root="")


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(WireHandler):
        def do_GET(self) -> None:
            standin.requests.append({"method": "GET", "path": self.path})
            self._json(200, {"models": [{"name": "llama3.2:3b", "model": "llama3.2:3b", "size": 1},
                                        {"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest"}]})

        def do_POST(self) -> None:
            body = self.body()
            standin.requests.append({"method": "POST", "path": self.path, "body": body})
            fault = standin.next_fault()
            if fault is not None and fault[0] == "status":
                message = f"model '{body.get('model')}' not found" if fault[1] == 404 else "injected"
                self._json(fault[1], {"error": message})
                return
            if self.path == "/api/embed":
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                self._json(200, {"model": body["model"], "embeddings": [vector(t) for t in inputs],
                                 "prompt_eval_count": len(inputs)})
                return
            chat = self.path == "/api/chat"
            words = standin.words()[: (body.get("options") or {}).get("num_predict") or None]
            self.start_chunked("application/x-ndjson")
            for i, word in enumerate(words):
                if fault is not None and fault[0] == "error_line" and i == fault[1]:
                    self._line({"error": "an error occurred mid-stream"})
                    self._chunk(b"")
                    return
                piece = {"message": {"role": "assistant", "content": word}} if chat else {"response": word}
                self._line({"model": body["model"], "created_at": "2025-01-01T00:00:00Z", **piece, "done": False})
            reason = "length" if len(words) < len(standin.words()) else "stop"
            end = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
            self._line({"model": body["model"], **end, "done": True, "done_reason": reason, "total_duration": 1000,
                        "prompt_eval_count": 9, "eval_count": len(words)})
            self._chunk(b"")

        def _line(self, data: dict[str, Any]) -> None:
            self._chunk(json.dumps(data).encode() + b"\n")

    return Handler
