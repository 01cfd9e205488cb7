"""Every request, logged to SQLite: model, route, tokens, time to first token, total time,
status, client. Prompt text only when the server was started with --log-prompts."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    model TEXT, route TEXT NOT NULL, status INTEGER NOT NULL,
    prompt_tokens INTEGER, completion_tokens INTEGER,
    ttft_ms REAL, total_ms REAL,
    client TEXT, error TEXT, prompt TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
"""


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


class RequestLog:
    def __init__(self, path: Path, *, log_prompts: bool = False) -> None:
        self.path, self.log_prompts = path, log_prompts
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)

    def write(self, row: LogRow) -> None:
        row.ts = row.ts or time.time()
        if not self.log_prompts:
            row.prompt = None
        data = asdict(row)
        with self._lock, self._conn:
            self._conn.execute(
                f"INSERT INTO requests ({', '.join(data)}) VALUES ({', '.join('?' * len(data))})",
                tuple(data.values()))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def latest(path: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The newest rows first; an absent log is an empty one."""
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM requests ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()
