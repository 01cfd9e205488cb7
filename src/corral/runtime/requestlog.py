"""Every request, logged to SQLite: model (the name asked for), the target that served it, attempts,
door, task, route, tokens, time to first token, total time, status, client, and its cost with the
price's source (the one ledger, :mod:`corral.runtime.ledger`). Prompt text only when the server was
started with --log-prompts."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corral.migrations import Step, migrate

log = logging.getLogger("corral.requestlog")

MIGRATIONS: tuple[Step, ...] = (
    (  # 1: the schema before migrations existed
        """CREATE TABLE IF NOT EXISTS requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            model TEXT, route TEXT NOT NULL, status INTEGER NOT NULL,
            prompt_tokens INTEGER, completion_tokens INTEGER,
            ttft_ms REAL, total_ms REAL,
            client TEXT, error TEXT, prompt TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts)",
    ),
    (  # 2: the door a call came through and its task; older rows all came through the OpenAI routes
        "ALTER TABLE requests ADD COLUMN door TEXT",
        "ALTER TABLE requests ADD COLUMN task TEXT",
        "UPDATE requests SET door = 'openai' WHERE route LIKE '/v1/%'",
        """UPDATE requests SET task = CASE route WHEN '/v1/chat/completions' THEN 'chat'
            WHEN '/v1/completions' THEN 'complete' WHEN '/v1/embeddings' THEN 'embed' END""",
    ),
    (  # 3: the ledger: who served (a chain's target), after how many attempts, and what it cost
        "ALTER TABLE requests ADD COLUMN target TEXT",
        "ALTER TABLE requests ADD COLUMN attempts INTEGER",
        "ALTER TABLE requests ADD COLUMN cost_usd REAL",
        "ALTER TABLE requests ADD COLUMN price_source TEXT",
    ),
)


@dataclass
class LogRow:
    model: str | None
    route: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    total_ms: float | None = None
    client: str | None = None
    error: str | None = None
    prompt: str | None = None
    ts: float = 0.0
    door: str | None = None  # a Door value
    task: str | None = None  # a Task value
    target: str | None = None  # what served it: the model itself, or a chain's target
    attempts: int = 1
    cost_usd: float = 0.0
    price_source: str | None = None  # config | table | local_time | unknown


FLUSH_S = 0.1  # after writing, the writer sleeps this long so that rows queued meanwhile share a transaction


class RequestLog:
    """Rows are queued by the request path and written by one thread, many per transaction.

    The writer wakes for the first row after a quiet spell, writes what is queued, then sleeps
    ``FLUSH_S`` (cut short by :meth:`close`) before it looks again: under load, queuing a row
    wakes no thread and rows reach the file at most about ``FLUSH_S`` after their call ended.
    WAL with synchronous=NORMAL: a crash or kill never corrupts the log, and every committed row
    survives the death of the process; a ``kill -9`` loses the rows still queued (the calls of its
    last ~``FLUSH_S``), a power loss at worst the last transactions. :meth:`close` (the runtime's
    exit, so SIGTERM's) writes the whole queue first.
    """

    def __init__(self, path: Path, *, log_prompts: bool = False, busy_timeout: float = 30.0) -> None:
        self.path, self.log_prompts = path, log_prompts
        self.dropped = 0  # rows SQLite refused (see _write)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=busy_timeout)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        migrate(self._conn, MIGRATIONS, f"the request log {path}")
        self._queue: queue.SimpleQueue[LogRow | threading.Event | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._drain, name="corral-requestlog", daemon=True)
        self._writer.start()

    def write(self, row: LogRow) -> None:
        """Queue a row; never blocks on the disk."""
        row.ts = row.ts or time.time()
        if not self.log_prompts:
            row.prompt = None
        self._queue.put(row)

    def _drain(self) -> None:
        while True:
            rows = [self._queue.get()]
            while not self._queue.empty():
                rows.append(self._queue.get())
            done = rows[-1] is None
            self._write([asdict(r) for r in rows if isinstance(r, LogRow)])
            for r in rows:
                if isinstance(r, threading.Event):
                    r.set()
            if done:
                return
            if not any(isinstance(r, threading.Event) for r in rows):
                self._closing.wait(FLUSH_S)

    def _write(self, data: list[dict[str, Any]]) -> None:
        """Insert ``data``, up to 512 rows a transaction. A batch SQLite refuses (the file locked by
        another process past the busy timeout, a full disk, an I/O error) is dropped with a warning;
        the writer lives on, so later rows, flush() and close() still work."""
        for start in range(0, len(data), 512):
            batch = data[start:start + 512]
            try:
                self._insert(batch)
            except sqlite3.Error as exc:
                self.dropped += len(batch)
                log.warning("the request log %s refused %d row(s), dropped: %s", self.path, len(batch), exc)

    def _insert(self, data: list[dict[str, Any]]) -> None:
        cols = list(data[0])
        with self._conn:
            self._conn.executemany(f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                   [tuple(d.values()) for d in data])

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every row queued before this call is in the file."""
        written = threading.Event()
        self._queue.put(written)
        written.wait(timeout)

    def close(self) -> None:
        """Write what is queued, then close."""
        self._closing.set()
        self._queue.put(None)
        self._writer.join()
        self._conn.close()


def _query(path: Path, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Rows of ``sql`` on the log at ``path`` (migrated first: a log an older corral wrote); an
    absent log has none."""
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=30)
    try:
        migrate(conn, MIGRATIONS, f"the request log {path}")
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def latest(path: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The newest rows first; an absent log is an empty one."""
    return page(path, limit=limit)


def page(path: Path, *, model: str | None = None, status: str | None = None, door: str | None = None,
         before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest rows first, filtered: ``model`` (the name asked for or the target that served),
    ``status`` ("ok": below 400, "error": 400 and above, or one code), ``door``; ``before``: rows
    older than that id (the next page)."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if model:
        where.append("(model = ? OR target = ?)")
        params += [model, model]
    if status == "ok":
        where.append("status < 400")
    elif status == "error":
        where.append("status >= 400")
    elif status:
        where.append("status = ?")
        params.append(int(status))
    if door:
        where.append("door = ?")
        params.append(door)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    return _query(path, f"SELECT * FROM requests WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                  (*params, limit))


def usage(path: Path, since: float | None = None) -> list[dict[str, Any]]:
    """Calls and tokens per model and door (since ``since``, unix seconds), busiest first."""
    return _query(path, """SELECT model, door, COUNT(*) AS requests, SUM(status >= 400) AS errors,
                                  COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,
                                  COALESCE(SUM(completion_tokens), 0) AS completion_tokens,
                                  COALESCE(SUM(total_ms), 0) AS total_ms
                           FROM requests WHERE ts >= ? GROUP BY model, door ORDER BY requests DESC, model""",
                  (since or 0.0,))


def ledger(path: Path, since: float | None = None) -> list[dict[str, Any]]:
    """Calls, tokens, compute time and cost per day (UTC), name asked for and target, since ``since``
    (unix seconds); rows written before the ledger existed count as their own model's, cost 0."""
    return _query(path, """SELECT date(ts, 'unixepoch') AS day, model AS name, COALESCE(target, model) AS target,
                                  COUNT(*) AS requests, SUM(status >= 400) AS errors,
                                  COALESCE(SUM(attempts), COUNT(*)) AS attempts,
                                  COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,
                                  COALESCE(SUM(completion_tokens), 0) AS completion_tokens,
                                  ROUND(COALESCE(SUM(total_ms), 0) / 1000.0, 3) AS seconds,
                                  COALESCE(SUM(cost_usd), 0.0) AS cost_usd,
                                  GROUP_CONCAT(DISTINCT COALESCE(price_source, 'unknown')) AS price_sources
                           FROM requests WHERE ts >= ? GROUP BY day, name, target ORDER BY day, name, target""",
                  (since or 0.0,))
