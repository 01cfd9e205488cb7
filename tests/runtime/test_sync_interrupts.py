"""Ctrl-C in the CLI's runtime (SyncRuntime) is taken at safe points: a wait is cancelled, and a
result that arrives together with the Ctrl-C is given back on the runtime's loop, never leaked."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from corral.config import load_settings
from corral.models.store import Store
from corral.runtime.runtime import RuntimeOptions, build_runtime
from corral.runtime.sync import SyncRuntime


@pytest.fixture
def sync_runtime() -> SyncRuntime:
    settings = load_settings()
    runtime = build_runtime(settings, Store(settings.manifest_path), RuntimeOptions(budget_bytes=2**30))
    return SyncRuntime(runtime)


def test_ctrl_c_cancels_a_wait_and_the_handler_is_restored(sync_runtime: SyncRuntime) -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the caller waits
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    before = signal.getsignal(signal.SIGINT)
    with sync_runtime as rt:
        with pytest.raises(KeyboardInterrupt):
            rt.wait(slow())
        assert cancelled.wait(5)  # the work on the loop was cancelled, not left running
        assert signal.getsignal(signal.SIGINT) is before


def test_a_result_that_comes_with_ctrl_c_is_given_back_on_the_loop(sync_runtime: SyncRuntime) -> None:
    given: list[tuple[int, str]] = []
    done = threading.Event()

    async def finishes_as_ctrl_c_comes() -> int:
        os.kill(os.getpid(), signal.SIGINT)
        return 42

    def give_back(value: int) -> None:
        given.append((value, threading.current_thread().name))
        done.set()

    with sync_runtime as rt:
        with pytest.raises(KeyboardInterrupt):
            rt.wait(finishes_as_ctrl_c_comes(), give_back)
        assert done.wait(5)
    assert given == [(42, "corral-runtime")]
