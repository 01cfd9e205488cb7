"""Long unstreamed work (image generation) that stops when its client leaves: the work runs as a
task beside a watcher of the ASGI ``http.disconnect`` message; whichever ends first wins. A client
gone cancels the work, whose runtime stream then stops the engine at its next step (logged 499)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request

from corral.errors import CorralError

T = TypeVar("T")


class ClientGone(CorralError):
    """The client disconnected before the answer was ready (nobody reads this error)."""

    http_status = 499


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body was read already: only the disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, unless the client disconnects first: then ``work`` is cancelled and
    awaited (its engine has stopped when this returns) and ClientGone is raised."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await _settled(task)
    if task.cancelled():
        raise ClientGone("the client closed the connection")
    return task.result()


async def _settled(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` has ended, even if this waiter is cancelled meanwhile."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
