"""Clients that leave before their answer starts: an ASGI middleware that watches the connection
once the request body has been read, and cancels the request's handler when the client disconnects
before the response has begun (a request waiting in a model's queue, a stream whose first token is
still being made, a whole answer being computed). The cancellation reaches the runtime, which gives
the queue place or the engine back and logs the call 499. After the response has begun the
disconnect is passed on as usual (a stream then stops at its next chunk). A client that accepts no
byte of its answer for the stall timeout (a reader that never drains its socket) is treated as gone:
its answer ends there, the connection is closed and its model slot comes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

Message = dict[str, Any]
log = logging.getLogger("corral.api")


class SlowReader(BaseException):
    """The client took none of its answer for the stall timeout. A BaseException, as CancelledError
    is: it ends the request like a departure, and no error handler takes it for an error."""


class _Connection:
    """One request's receive channel: passed straight through until the body is complete, then read
    by a watcher whose messages the app receives in turn."""

    def __init__(self, receive: Any) -> None:
        self.upstream = receive
        self.body_read = asyncio.Event()
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started = False  # the response has begun
        self.left = False  # the client went away before it began; the handler was cancelled for it
        self.slow = False  # the client took nothing of the answer for the send timeout

    async def receive(self) -> Message:
        if not self.body_read.is_set():
            message: Message = await self.upstream()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_read.set()
                if message["type"] == "http.disconnect":
                    self.inbox.put_nowait(message)  # later receives see the disconnect again
            return message
        return await self.inbox.get()

    async def watch(self, handler: asyncio.Task[None]) -> None:
        await self.body_read.wait()
        while True:
            message: Message = await self.upstream()
            self.inbox.put_nowait(message)
            if message["type"] == "http.disconnect":
                if not self.started and not handler.done():
                    self.left = True
                    handler.cancel()
                return


class Departures:
    """Wraps an ASGI app; only plain HTTP requests are watched. ``send_timeout``: seconds a client may
    take to accept one piece of its answer (None: forever)."""

    def __init__(self, app: Any, send_timeout: float | None = None) -> None:
        self.app = app
        self.send_timeout = send_timeout if send_timeout and send_timeout > 0 else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = _Connection(receive)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                connection.started = True
            try:
                async with asyncio.timeout(self.send_timeout):  # no task per chunk, unlike wait_for
                    await send(message)
            except TimeoutError:
                connection.slow = True
                raise SlowReader from None

        handler = asyncio.ensure_future(self.app(scope, connection.receive, sending))
        watcher = asyncio.ensure_future(connection.watch(handler))
        try:
            await handler
        except BaseException:  # SlowReader may come wrapped in an exception group
            if connection.slow:
                log.warning("%s %s: the client read nothing for %g s; its answer was cut off",
                            scope.get("method"), scope.get("path"), self.send_timeout)
            elif not connection.left:
                raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
