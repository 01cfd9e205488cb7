"""The catalogue's row 22 (issue 18): the request log and the manifest survive ``kill -9`` of the
process writing them, and the log's queue is flushed on SIGTERM.

What is guaranteed, from runtime/requestlog.py and models/store.py: both files are SQLite in WAL
mode. The manifest commits each write in its own transaction before the call returns. The request
log queues a row when a call ends and one writer thread commits what is queued, a transaction at a
time, at most about 0.1 s later (``FLUSH_S``); ``flush()`` returns once the rows queued before it
are committed, and ``close()`` (the runtime's exit, so SIGTERM's) writes the whole queue first. With
synchronous=NORMAL a committed transaction survives the death of the process (only a power loss can
take the last ones). So after ``kill -9``: every committed row is there, whole, and the files open
cleanly (``PRAGMA integrity_check`` is ok, WAL still on, the CLI reads them); rows still queued in
the dead process (the calls of its last ~0.1 s) are lost. After SIGTERM: every answered call is
logged.

"Committed" is made observable three ways here: rows an independent reader saw in the log file
while a real ``corral serve`` was under load, rows a writer process reported flushed, and manifest
entries a writer process reported put; each process is then killed with SIGKILL mid-stream."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import registered, run_cli
from tests.server.conftest import Server

pytestmark = [pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
EMBED = {"model": "minilm", "input": "the quick brown fox"}


@contextlib.contextmanager
def check_file(path: Path) -> Iterator[sqlite3.Connection]:
    """``path`` opened as any client would (recovering its WAL), after checking it is whole and in WAL mode."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        yield conn


def log_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT * FROM requests ORDER BY id").fetchall()
    finally:
        conn.close()


class Traffic:
    """Client threads posting embeddings without pause, and a reader thread that keeps the log's
    committed rows as it last saw them, until :meth:`stop`."""

    def __init__(self, url: str, log: Path, clients: int) -> None:
        self.url, self.log = url, log
        self.started = self.answered = 0
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.seen: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.threads.append(threading.Thread(target=self._reader, daemon=True))
        for t in self.threads:
            t.start()

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self.halt.is_set():
                with self.lock:
                    self.started += 1
                try:
                    status = http.post("/v1/embeddings", json=EMBED).status_code
                except httpx.TransportError as exc:  # the server died under this request
                    with self.lock:
                        self.failures.append(type(exc).__name__)
                    return
                with self.lock:
                    self.statuses.append(status)
                    self.answered += status == 200
                if status != 200:  # refused while draining: this client is done
                    return

    def _reader(self) -> None:
        while not self.halt.is_set():
            rows = log_rows(self.log)
            with self.lock:
                self.seen = rows
            time.sleep(0.02)

    def wait_for(self, predicate: Callable[[Traffic], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate(self):
                    return
            assert time.monotonic() < deadline, "traffic never reached the state wanted"
            time.sleep(0.01)

    def stop(self) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(60)


def wait_until_closed(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            return
        assert time.monotonic() < deadline, "the server never stopped listening"
        time.sleep(0.01)


def test_kill_9_under_load_keeps_every_committed_row_then_sigterm_flushes_the_queue(tmp_path: Path,
                                                                                    minilm_path: Path) -> None:
    home = tmp_path / "home"
    env = {"CORRAL_HOME": str(home), "CORRAL_CONFIG": str(home / "config.toml")}
    log, manifest = home / "requests.db", home / "manifest.db"
    srv = Server(home, "--models", "minilm", register={"minilm": minilm_path})
    traffic = Traffic(srv.url, log, clients=4)
    try:  # the writer has committed rows and goes on while four clients keep the server busy: kill it then
        traffic.wait_for(lambda t: len(t.seen) >= 10)
        srv.proc.send_signal(signal.SIGKILL)
        assert srv.proc.wait(30) == -signal.SIGKILL
    finally:
        traffic.stop()
        srv.stop(signal.SIGKILL)
    assert set(traffic.statuses) == {200} and traffic.failures  # clients were cut off, none got an error status
    seen, started = traffic.seen, traffic.started

    with check_file(log) as conn:
        rows = conn.execute("SELECT * FROM requests ORDER BY id").fetchall()
        fields = [d[0] for d in conn.execute("SELECT * FROM requests LIMIT 0").description]
    with check_file(manifest) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM models")] == ["minilm"]
    assert rows[:len(seen)] == seen  # every row committed before the kill is there, unchanged
    assert len(seen) <= len(rows) <= started  # and no row that was never a request
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # no gap, no torn row
    named = [dict(zip(fields, r, strict=True)) for r in rows]
    assert {(r["model"], r["door"], r["route"], r["status"]) for r in named} == {
        ("minilm", "openai", "/v1/embeddings", 200)}
    assert all(r["prompt_tokens"] > 0 and r["total_ms"] is not None for r in named)

    logs = run_cli("logs", "--json", "-n", "100000", env=env)
    listed = run_cli("list", "--json", env=env)
    assert logs.returncode == 0 and listed.returncode == 0, logs.stderr + listed.stderr
    assert len(json.loads(logs.stdout)) == len(rows)
    assert [m["name"] for m in registered(json.loads(listed.stdout))] == ["minilm"]

    again = Server(home, "--models", "minilm")  # the same files, after the crash
    traffic = Traffic(again.url, log, clients=4)
    blocker = sqlite3.connect(log, timeout=30, isolation_level=None)
    try:  # SIGTERM with requests in flight: they drain, and close() must write every queued row before exit
        traffic.wait_for(lambda t: t.answered >= 4)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the log's write lock: rows can only queue
        written, locked_at = len(log_rows(log)), traffic.answered
        traffic.wait_for(lambda t: t.answered >= locked_at + 4)  # answered, so queued, not written
        again.proc.send_signal(signal.SIGTERM)
        wait_until_closed(again.port)  # it stopped listening and shuts down, its last rows still queued:
        with pytest.raises(subprocess.TimeoutExpired):  # it does not exit before they are written
            again.proc.wait(2)
        assert len(log_rows(log)) == written < len(rows) + traffic.answered
        blocker.execute("ROLLBACK")
        code = again.proc.wait(60)
    finally:
        blocker.close()
        traffic.stop()
        again.stop(signal.SIGKILL)
    assert code == 0 and set(traffic.statuses) <= {200, 503}  # 503: refused while draining
    with check_file(log) as conn:
        after = conn.execute("SELECT id, status FROM requests WHERE id > ? ORDER BY id", (len(rows),)).fetchall()
    assert [status for _, status in after].count(200) == traffic.answered  # every answered call, flushed
    assert [i for i, _ in after] == list(range(len(rows) + 1, len(rows) + 1 + len(after)))
    with check_file(manifest):
        pass


WRITE_LOG = """
import sys
from pathlib import Path
from corral.runtime.requestlog import LogRow, RequestLog
log = RequestLog(Path(sys.argv[1]))
n = 0
while True:
    for _ in range(25):
        n += 1
        log.write(LogRow(model=f"m{n}", route="/v1/embeddings", status=200, prompt_tokens=n, door="openai"))
    log.flush()  # returns once those rows are committed
    print(n, flush=True)
"""

WRITE_MANIFEST = """
import sys
from pathlib import Path
from corral.models.store import Store
from tests.fake_engine import register_fake
from tests.reliability.test_crash_durability import manifest_ops
store = Store(Path(sys.argv[1]) / "manifest.db")
for n, (op, name) in enumerate(manifest_ops(), 1):
    if op == "put":
        register_fake(store, Path(sys.argv[1]) / "files", name)
    elif op == "measure":
        store.record_measurement(name, int(name[1:]), "cpu")
    else:
        store.remove(name)
    print(n, flush=True)  # that call returned: its transaction is committed
"""


def manifest_ops() -> Iterator[tuple[str, str]]:
    """What the manifest writer does, in order: put m1, measure m1, put m2, ..., and every third
    model removes the one before it."""
    for n in itertools.count(1):
        yield "put", f"m{n}"
        yield "measure", f"m{n}"
        if n % 3 == 0:
            yield "remove", f"m{n - 1}"


def manifest_after(ops: int) -> tuple[set[str], dict[str, int]]:
    """The models and measurements the manifest holds after the first ``ops`` operations."""
    names: set[str] = set()
    measured: dict[str, int] = {}
    for op, name in itertools.islice(manifest_ops(), ops):
        if op == "put":
            names.add(name)
        elif op == "measure":
            measured[name] = int(name[1:])
        else:
            names.discard(name)
            measured.pop(name, None)
    return names, measured


def killed_after(script: str, folder: Path, at_least: int) -> int:
    """Run ``script`` (it prints a count after each commit) until it has printed ``at_least``, then
    SIGKILL it while it goes on writing; the last count it printed."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    last = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            last = int(line)
            if last >= at_least:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return last


def test_a_log_writer_killed_mid_write_keeps_every_flushed_row(tmp_path: Path) -> None:
    path = tmp_path / "requests.db"
    flushed = killed_after(WRITE_LOG, path, at_least=500)
    with check_file(path) as conn:
        rows = conn.execute("SELECT id, model, prompt_tokens FROM requests ORDER BY id").fetchall()
    assert len(rows) >= flushed  # every row committed (flush returned) before the kill
    assert rows == [(i, f"m{i}", i) for i in range(1, len(rows) + 1)]  # in order, whole, nothing torn


def test_a_manifest_writer_killed_mid_write_keeps_every_committed_entry(tmp_path: Path) -> None:
    done = killed_after(WRITE_MANIFEST, tmp_path, at_least=150)
    with check_file(tmp_path / "manifest.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM models")}
        measured = dict(conn.execute("SELECT name, bytes FROM measurements").fetchall())
    # every call that returned before the kill is there; the one under way is all there or not at all
    assert (names, measured) in (manifest_after(done), manifest_after(done + 1))
    env = {"CORRAL_HOME": str(tmp_path), "CORRAL_CONFIG": str(tmp_path / "config.toml")}
    listed = run_cli("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert {m["name"] for m in registered(json.loads(listed.stdout))} == names


def test_a_log_locked_by_another_process_drops_a_batch_and_keeps_writing(tmp_path: Path) -> None:
    from corral.runtime.requestlog import LogRow, RequestLog

    path = tmp_path / "requests.db"
    log = RequestLog(path, busy_timeout=0.2)
    blocker = sqlite3.connect(path, timeout=30, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # held past the log's busy timeout
    log.write(LogRow(model="refused", route="/v1/embeddings", status=200))
    deadline = time.monotonic() + 60
    while log.dropped == 0:
        assert time.monotonic() < deadline, "the locked write never gave up"
        time.sleep(0.01)
    blocker.execute("ROLLBACK")
    blocker.close()
    log.write(LogRow(model="later", route="/v1/embeddings", status=200))
    log.flush()
    assert [r[2] for r in log_rows(path)] == ["later"]  # the writer lived on (it had died: no row, ever again)
    log.write(LogRow(model="at close", route="/v1/embeddings", status=200))
    log.close()
    assert [r[2] for r in log_rows(path)] == ["later", "at close"] and log.dropped == 1

