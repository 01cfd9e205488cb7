"""Responses kept for ``previous_response_id`` (``corral serve --store-responses``): each response's
whole conversation (the chat messages it was answered from, then its answer) and the ``response``
object, in SQLite under the data folder (``responses.db``, WAL), deleted once older than the
retention period. Only a server started with the flag writes here: prompts are kept nowhere else
(the request log keeps none without ``--log-prompts``)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from corral.migrations import migrate

MIGRATIONS = [("CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, created_at REAL NOT NULL, "
               "model TEXT NOT NULL, messages TEXT NOT NULL, response TEXT NOT NULL)",
               "CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at)")]


class ResponseStore:
    """Every method is short and thread-safe; callers run them off the event loop."""

    def __init__(self, data_dir: Path, retention: float) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path, self.retention = data_dir / "responses.db", retention
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        migrate(self._conn, MIGRATIONS, f"the stored responses {self.path}")

    def put(self, response: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        now = time.time()
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                               (response["id"], now, response["model"], json.dumps(messages), json.dumps(response)))
            if self.retention >= 0:
                self._conn.execute("DELETE FROM responses WHERE created_at < ?", (now - self.retention,))

    def _row(self, response_id: str) -> tuple[str, str] | None:
        cutoff = time.time() - self.retention if self.retention >= 0 else 0.0
        with self._lock:
            row = self._conn.execute("SELECT messages, response FROM responses WHERE id = ? AND created_at >= ?",
                                     (response_id, cutoff)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def messages(self, response_id: str) -> list[dict[str, Any]] | None:
        """The conversation up to and including the response ``response_id`` (None: unknown or expired)."""
        row = self._row(response_id)
        return None if row is None else list(json.loads(row[0]))

    def response(self, response_id: str) -> dict[str, Any] | None:
        row = self._row(response_id)
        return None if row is None else dict(json.loads(row[1]))

    def delete(self, response_id: str) -> bool:
        with self._lock, self._conn:
            return self._conn.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()
