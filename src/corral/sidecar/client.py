"""A small client for the sidecar, for apps written in Python and for corral's own tests: start
``corral sidecar`` as a child, call methods (several at once, from any thread), stream deltas,
cancel, close. Every line the sidecar writes is parsed; one that is not JSON is kept in
``bad_lines`` (there should never be one)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import IO, Any


class SidecarError(Exception):
    """An error answer: JSON-RPC ``code``, ``message`` and ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} ({code})")
        self.code, self.message, self.data = code, message, data


class Call:
    """One request in flight: its deltas as they come, then its result (or error)."""

    def __init__(self, client: SidecarClient, id: int) -> None:
        self.client, self.id = client, id
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.final: Any = None

    def _put(self, kind: str, value: Any) -> None:
        self._events.put((kind, value))

    def deltas(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The ``stream/delta`` chunks; afterwards :attr:`final` holds the result. An error raises."""
        while True:
            kind, value = self._events.get(timeout=timeout)
            if kind == "delta":
                yield value
            elif kind == "error":
                raise value
            else:
                self.final = value
                return

    def result(self, timeout: float | None = None) -> Any:
        for _ in self.deltas(timeout):
            pass
        return self.final

    def cancel(self) -> None:
        self.client.notify("notifications/cancelled", {"requestId": self.id})


class SidecarClient:
    def __init__(self, args: Sequence[str] = (), *, env: dict[str, str] | None = None,
                 stderr: IO[Any] | int | None = None, command: Sequence[str] | None = None) -> None:
        argv = list(command) if command else [sys.executable, "-m", "corral", "sidecar", *args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     env=None if env is None else {**os.environ, **env})
        self.messages: list[dict[str, Any]] = []  # every message read, in order
        self.bad_lines: list[bytes] = []
        self._calls: dict[int, Call] = {}
        self._progress: dict[Any, Callable[[dict[str, Any]], None]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="sidecar-client", daemon=True)
        self._reader.start()

    # --- sending ------------------------------------------------------------------------------

    def send_line(self, line: bytes) -> None:
        """Write one raw line (a newline is added)."""
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(line + b"\n")
            self.proc.stdin.flush()

    def _send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps({"jsonrpc": "2.0", **message}).encode())

    def start(self, method: str, params: dict[str, Any] | None = None, *,
              progress: Callable[[dict[str, Any]], None] | None = None) -> Call:
        """Send a request and return at once; ``progress`` receives its ``notifications/progress``."""
        with self._lock:
            call = Call(self, next(self._ids))
            self._calls[call.id] = call
        params = dict(params or {})
        if progress is not None:
            self._progress[call.id] = progress
            params["_meta"] = {"progressToken": call.id}
        self._send({"id": call.id, "method": method, "params": params})
        return call

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = 300,
             progress: Callable[[dict[str, Any]], None] | None = None) -> Any:
        return self.start(method, params, progress=progress).result(timeout)

    def stream(self, method: str, params: dict[str, Any], *, timeout: float | None = 300) -> Call:
        """A request with ``"stream": true``: iterate ``.deltas()``, then read ``.final``."""
        return self.start(method, {**params, "stream": True})

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"method": method, "params": params})

    # --- receiving ----------------------------------------------------------------------------

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self.bad_lines.append(line)
                continue
            self.messages.append(message)
            self._route(message)
        for call in list(self._calls.values()):
            call._put("error", SidecarError(-32000, "the sidecar exited"))

    def _route(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params") or {}
        if method == "stream/delta":
            call = self._calls.get(params.get("requestId", -1))
            if call is not None:
                call._put("delta", params["chunk"])
        elif method == "notifications/progress":
            report = self._progress.get(params.get("progressToken"))
            if report is not None:
                report(params)
        elif "id" in message and method is None:
            call = self._calls.pop(message["id"], None) if message["id"] is not None else None
            if call is None:
                return  # an error about a line that had no id; kept in .messages
            self._progress.pop(call.id, None)
            if "error" in message:
                e = message["error"]
                call._put("error", SidecarError(e["code"], e["message"], e.get("data")))
            else:
                call._put("result", message["result"])

    # --- closing ------------------------------------------------------------------------------

    def close(self, timeout: float = 60) -> int:
        """Ask the sidecar to shut down, close its stdin, wait for it; its exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(SidecarError, OSError, queue.Empty):
                self.start("shutdown").result(timeout)
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._reader.join(5)

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
