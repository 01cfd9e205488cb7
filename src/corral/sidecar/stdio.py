"""The sidecar's two pipes. At start the protocol takes the real stdin and stdout (duplicated
file descriptors) and points fd 1 at stderr and fd 0 at /dev/null, so a print or an ``os.write(1,
...)`` from a native library can never corrupt the stream, nor a library read the protocol's input.
Where the two are pipes (an app's child), the event loop reads and writes them itself, with no
thread hand-off on the request path (:func:`open_loop_pipes`); otherwise (a file, a terminal) one
thread reads lines and one writes them. Either way lines are bounded on input, and written whole
and in order on output, whichever thread sends them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
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


def is_pipe_or_socket(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _LineReader(asyncio.Protocol):
    def __init__(self, limit: int, deliver: Callable[[bytes | TooLong | None], None]) -> None:
        self.splitter, self.deliver, self.ended = LineSplitter(limit), deliver, False

    def data_received(self, data: bytes) -> None:
        for item in self.splitter.feed(data):
            self.deliver(item)

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            for item in self.splitter.finish():
                self.deliver(item)
            self.deliver(None)


class LoopWriter:
    """Lines written by the event loop's own pipe transport; :meth:`send` may be called from any
    thread (download progress comes from worker threads) and keeps each caller's order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport) -> None:
        self.loop, self.transport = loop, transport
        self.thread = threading.get_ident()

    def send(self, line: bytes) -> None:
        if threading.get_ident() == self.thread:
            self._write(line)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self.loop.call_soon_threadsafe(self._write, line)

    def _write(self, line: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(line)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered (``timeout`` seconds at most: a parent that stopped reading), then close."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self.transport.get_write_buffer_size() and not self.transport.is_closing()
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.005)
        self.transport.close()
        await asyncio.sleep(0)  # the transport's close callback runs


async def open_loop_pipes(pipes: Pipes, limit: int,
                          deliver: Callable[[bytes | TooLong | None], None]) -> LoopWriter:
    """Read ``pipes.read_fd`` with the loop (lines to ``deliver``); a writer on ``pipes.write_fd``."""
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: _LineReader(limit, deliver), os.fdopen(pipes.read_fd, "rb", buffering=0))
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(pipes.write_fd, "wb", buffering=0))
    return LoopWriter(loop, transport)
