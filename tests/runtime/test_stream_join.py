"""The engine thread of a stream is waited for even when the consumer's task is cancelled again
and again (anyio's cancel scope on a client that left does that): its model slot must not be freed
while the engine still runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from corral.runtime.scheduler import _join


def test_join_outlasts_repeated_cancellation_then_reraises() -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, daemon=True)
    thread.start()

    async def scenario() -> tuple[bool, bool]:
        task = asyncio.create_task(_join(thread))
        await asyncio.sleep(0)
        for _ in range(20):  # cancelled at every await, as a cancel scope does
            task.cancel()
            await asyncio.sleep(0)
        still_waiting = not task.done() and thread.is_alive()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return still_waiting, thread.is_alive()

    assert asyncio.run(scenario()) == (True, False)


def test_join_without_cancellation_just_returns() -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    asyncio.run(_join(thread))
    assert not thread.is_alive()
