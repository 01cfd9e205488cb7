"""The engine thread of a stream is waited for even when the consumer's task is cancelled again
and again (anyio's cancel scope on a client that left does that): its model slot must not be freed
while the engine still runs. ``_join`` waits on the future the engine thread completes as it ends."""

from __future__ import annotations

import asyncio
import threading

import pytest

from corral.runtime.scheduler import _join, _settle


def ending(loop: asyncio.AbstractEventLoop, release: threading.Event) -> tuple[threading.Thread, asyncio.Future[None]]:
    """A thread that waits for ``release``, then completes the returned future on ``loop``."""
    ended: asyncio.Future[None] = loop.create_future()

    def work() -> None:
        release.wait()
        loop.call_soon_threadsafe(_settle, ended)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, ended


def test_join_outlasts_repeated_cancellation_then_reraises() -> None:
    release = threading.Event()

    async def scenario() -> tuple[bool, bool]:
        thread, ended = ending(asyncio.get_running_loop(), release)
        task = asyncio.create_task(_join(ended))
        await asyncio.sleep(0)
        for _ in range(20):  # cancelled at every await, as a cancel scope does
            task.cancel()
            await asyncio.sleep(0)
        still_waiting = not task.done() and thread.is_alive()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        thread.join(5)
        return still_waiting, ended.done()

    assert asyncio.run(scenario()) == (True, True)


def test_join_without_cancellation_just_returns() -> None:
    release = threading.Event()
    release.set()

    async def scenario() -> bool:
        _, ended = ending(asyncio.get_running_loop(), release)
        await _join(ended)
        return ended.done()

    assert asyncio.run(scenario())
