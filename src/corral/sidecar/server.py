"""The sidecar's session: lines in, requests run concurrently through the runtime, answers out.

Each request is an asyncio task keyed by its id, so several run at once (concurrent generations
batch as over HTTP) and ``notifications/cancelled`` cancels one: its generation stops, its slot is
freed, it answers -32800 and the log records 499. Bad input is answered and the session goes on.
End of input, ``shutdown``, SIGTERM or SIGINT: in-flight requests are cancelled, models unloaded,
exit 0 (``shutdown`` is answered last, once everything is released); a second signal exits at
once. Input read from a regular file is a batch: at its end every request is answered first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from corral.errors import BusyError, CorralError, UsageError
from corral.sidecar.methods import METHODS, Method, Session
from corral.sidecar.protocol import (
    CORRAL_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    Incoming,
    RequestId,
    RpcError,
    TooLong,
    error_line,
    notification_line,
    parse,
    result_line,
)

if TYPE_CHECKING:
    from corral.runtime.runtime import Runtime
    from corral.sidecar.stdio import Pipes

log = logging.getLogger("corral.sidecar")
Inbox = asyncio.Queue[bytes | TooLong | None]
DEFAULT_MAX_LINE = 16 * 1024 * 1024


def error_for(exc: BaseException) -> tuple[int, str, Any]:
    """The JSON-RPC error (code, message, data) a failed method answers with."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = f"invalid params: {param}: {first['msg']}" if param else f"invalid params: {first['msg']}"
        return INVALID_PARAMS, message, {"param": param}
    if isinstance(exc, CorralError):
        data: dict[str, Any] = {"type": type(exc).__name__, "hint": exc.hint, "status": exc.http_status}
        if isinstance(exc, BusyError):
            data["retry_after"] = exc.retry_after
        return (INVALID_PARAMS if isinstance(exc, UsageError) else CORRAL_ERROR), exc.message, data
    if isinstance(exc, RpcError):
        return exc.code, exc.message, exc.data
    return INTERNAL_ERROR, f"internal error: {type(exc).__name__}", None


class SidecarSession:
    def __init__(self, runtime: Runtime, send: Callable[[bytes], None], *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.runtime, self.send, self.max_line = runtime, send, max_line
        self.inflight: dict[RequestId, asyncio.Task[None]] = {}
        self.shutdown_id: RequestId | None = None
        self.stopping = False

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send(notification_line(method, params))  # the writer serialises lines from any thread

    async def serve(self, inbox: Inbox, *, finish_on_eof: bool = False) -> None:
        """Answer lines until end of input (None) or ``shutdown``; then cancel what is in flight,
        unless the input was a file (``finish_on_eof``): then every request is answered first."""
        async with self.runtime:
            while not self.stopping:
                item = await inbox.get()
                if item is None:
                    if finish_on_eof and self.inflight:
                        await asyncio.wait(list(self.inflight.values()))
                    break
                self.receive(item)
            await self.cancel_all()
        if self.shutdown_id is not None:
            self.send(result_line(self.shutdown_id, {}))

    async def cancel_all(self, grace: float = 15.0) -> None:
        """Cancel every request in flight and wait (``grace`` seconds at most) for their answers."""
        tasks = list(self.inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    def receive(self, item: bytes | TooLong) -> None:
        if isinstance(item, TooLong):
            self.send(error_line(None, INVALID_REQUEST, f"invalid request: a line of {item.size} bytes is longer "
                                 f"than the limit of {self.max_line} bytes", {"limit": self.max_line}))
            return
        try:
            message = parse(item)
        except RpcError as exc:
            self.send(error_line(exc.id, exc.code, exc.message, exc.data))
            return
        if message.is_notification:
            self.on_notification(message)
            return
        rid = message.id
        assert rid is not None
        method = METHODS.get(message.method)
        if rid in self.inflight:
            self.send(error_line(rid, INVALID_REQUEST, f"invalid request: id {rid!r} is already in use"))
        elif message.method == "shutdown":
            self.shutdown_id, self.stopping = rid, True
        elif method is None:
            self.send(error_line(rid, METHOD_NOT_FOUND, f"method not found: {message.method!r}",
                                 {"methods": sorted([*METHODS, "shutdown"])}))
        else:
            task = asyncio.create_task(self.answer(rid, method, message.params))
            task.add_done_callback(lambda t: self._cancelled_early(rid, t))
            self.inflight[rid] = task

    def _cancelled_early(self, rid: RequestId, task: asyncio.Task[None]) -> None:
        """A task cancelled before it first ran never entered :meth:`answer`: answer for it."""
        if task.cancelled():
            self.inflight.pop(rid, None)
            self.send(error_line(rid, REQUEST_CANCELLED, "request cancelled"))

    def on_notification(self, message: Incoming) -> None:
        """``notifications/cancelled`` for a request in flight cancels it; anything else is ignored."""
        if message.method == "notifications/cancelled":
            task = self.inflight.get(message.params.get("requestId"))  # type: ignore[arg-type]
            if task is not None:
                task.cancel()

    async def answer(self, rid: RequestId, method: Method, params: dict[str, Any]) -> None:
        try:
            result = await method(Session(self.runtime, rid, self.notify), params)
            line = result_line(rid, result)
        except asyncio.CancelledError:
            line = error_line(rid, REQUEST_CANCELLED, "request cancelled")
        except Exception as exc:
            code, message, data = error_for(exc)
            if code == INTERNAL_ERROR:
                log.exception("request %r failed", rid)
            line = error_line(rid, code, message, data)
        finally:
            self.inflight.pop(rid, None)
        self.send(line)


def run_sidecar(runtime: Runtime, *, max_line: int = DEFAULT_MAX_LINE, pipes: Pipes | None = None) -> int:
    """Serve the protocol on the process's stdin/stdout until end of input or ``shutdown``; 0."""
    from corral.sidecar.stdio import take_stdio

    pipes = pipes or take_stdio()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(runtime, pipes, max_line))
    return 0


async def _serve(runtime: Runtime, pipes: Pipes, max_line: int) -> None:
    from corral.sidecar.stdio import Writer, is_pipe_or_socket, open_loop_pipes, read_lines

    loop = asyncio.get_running_loop()
    inbox: Inbox = asyncio.Queue()
    signalled: list[int] = []

    def on_signal(sig: int) -> None:
        """The first SIGTERM/SIGINT ends the session like end of input; a second one exits at once
        (an engine stuck in native code must not keep the process alive)."""
        if signalled:
            os._exit(128 + sig)
        signalled.append(sig)
        inbox.put_nowait(None)

    for sig in (signal.SIGTERM, signal.SIGINT):  # a terminal's Ctrl-C reaches the whole group
        loop.add_signal_handler(sig, on_signal, sig)
    if is_pipe_or_socket(pipes.read_fd) and is_pipe_or_socket(pipes.write_fd):
        writer = await open_loop_pipes(pipes, max_line, inbox.put_nowait)  # no thread on the request path
        try:
            await SidecarSession(runtime, writer.send, max_line=max_line).serve(inbox)
        finally:
            await writer.close()
        return

    def deliver(item: bytes | TooLong | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(inbox.put_nowait, item)

    threaded = Writer(pipes.write_fd)  # a file or a terminal: threads read and write
    read_lines(pipes.read_fd, max_line, deliver)
    try:  # requests read from a file (`corral sidecar < requests.jsonl`) all get their answers
        await SidecarSession(runtime, threaded.send, max_line=max_line).serve(
            inbox, finish_on_eof=not is_pipe_or_socket(pipes.read_fd) and not os.isatty(pipes.read_fd))
    finally:
        threaded.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]
