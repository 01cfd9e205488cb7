"""The sidecar's two pipes. At start the protocol takes the real stdin and stdout (duplicated
file descriptors) and points fd 1 at stderr and fd 0 at /dev/null, so a print or an ``os.write(1,
...)`` from a native library can never corrupt the stream, nor a library read the protocol's input.
One thread reads lines (bounded), one thread writes them: every write is serialised and flushed."""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from corral.sidecar.protocol import LineSplitter, TooLong

READ_SIZE = 1 << 16


@dataclass(frozen=True)
class Pipes:
    read_fd: int
    write_fd: int


def take_stdio() -> Pipes:
    """Keep the process's stdin/stdout for the protocol; fd 0 becomes /dev/null, fd 1 stderr."""
    sys.stdout.flush()
    pipes = Pipes(os.dup(0), os.dup(1))  # not inherited by children (os.dup's default)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return pipes


def read_lines(fd: int, limit: int, deliver: Callable[[bytes | TooLong | None], None]) -> threading.Thread:
    """A daemon thread passing each line (or TooLong) to ``deliver``, then None at end of input."""
    def run() -> None:
        splitter = LineSplitter(limit)
        try:
            while data := os.read(fd, READ_SIZE):
                for item in splitter.feed(data):
                    deliver(item)
            for item in splitter.finish():
                deliver(item)
        except OSError:
            pass
        finally:
            deliver(None)

    thread = threading.Thread(target=run, name="corral-sidecar-read", daemon=True)
    thread.start()
    return thread


class Writer:
    """Lines queued from any thread, written whole and in order by one thread."""

    def __init__(self, fd: int) -> None:
        self.fd, self.broken = fd, False
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="corral-sidecar-write", daemon=True)
        self._thread.start()

    def send(self, line: bytes) -> None:
        self._queue.put(line)

    def _run(self) -> None:
        while (line := self._queue.get()) is not None:
            view = memoryview(line)
            while view and not self.broken:
                try:
                    view = view[os.write(self.fd, view):]
                except OSError:  # the parent closed our stdout: nothing more can be said
                    self.broken = True

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()
        with contextlib.suppress(OSError):
            os.close(self.fd)
