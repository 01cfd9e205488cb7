"""The model manifest: a small SQLite table of registered models.

The manifest records where a model's files are and what inspection found; it never holds
weights. Writes are single transactions (WAL journal), so a killed process leaves either the
old or the new row, never a torn one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.migrations import Step, migrate
from corral.models.info import MemoryEstimate, ModelInfo, Requirement

MIGRATIONS: tuple[Step, ...] = (
    (  # 1: the schema before migrations existed
        """CREATE TABLE IF NOT EXISTS models (
            name TEXT PRIMARY KEY,
            source TEXT NOT NULL,        -- the reference it came from: hf:org/x@rev, pkg:mod, /abs/path
            source_kind TEXT NOT NULL,   -- hf | path | package
            path TEXT NOT NULL,          -- folder or file the engine loads
            owned INTEGER NOT NULL,      -- 1 when corral downloaded the files (rm --delete-files may remove them)
            info TEXT NOT NULL,          -- ModelInfo as JSON
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS measurements (
            name TEXT PRIMARY KEY,       -- memory measured after a real load, used for later fit decisions
            bytes INTEGER NOT NULL,
            device TEXT NOT NULL,
            measured_at REAL NOT NULL
        )""",
    ),
)

SELECT_ENTRY = "SELECT name, source, source_kind, path, owned, info, created_at FROM models"


@dataclass
class Entry:
    name: str
    source: str
    source_kind: str
    path: Path
    owned: bool
    info: ModelInfo
    created_at: float


def info_from_dict(data: dict[str, Any]) -> ModelInfo:
    data = dict(data)
    data["requirements"] = [Requirement(**r) for r in data.get("requirements", [])]
    mem = data.get("memory")
    data["memory"] = MemoryEstimate(**mem) if isinstance(mem, dict) else None
    return ModelInfo(**data)


class Store:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, timeout=30)
        try:
            if not self._ready:  # once per Store: WAL is a property of the file, the schema persists
                conn.execute("PRAGMA journal_mode=WAL")
                migrate(conn, MIGRATIONS, f"the manifest {self.db_path}")
                self._ready = True
            with conn:
                yield conn
        finally:
            conn.close()

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> Entry:
        name, source, kind, path, owned, info, created = row
        return Entry(name, source, kind, Path(path), bool(owned), info_from_dict(json.loads(info)), created)

    def get(self, name: str) -> Entry | None:
        with self._connect() as conn:
            row = conn.execute(SELECT_ENTRY + " WHERE name = ?", (name,)).fetchone()
        return self._entry(row) if row else None

    def find_by_path(self, path: Path) -> Entry | None:
        with self._connect() as conn:
            row = conn.execute(SELECT_ENTRY + " WHERE path = ?", (str(path),)).fetchone()
        return self._entry(row) if row else None

    def find_by_source(self, source: str) -> Entry | None:
        with self._connect() as conn:
            row = conn.execute(SELECT_ENTRY + " WHERE source = ?", (source,)).fetchone()
        return self._entry(row) if row else None

    def list(self) -> list[Entry]:
        with self._connect() as conn:
            rows = conn.execute(SELECT_ENTRY + " ORDER BY name").fetchall()
        return [self._entry(r) for r in rows]

    def put(self, name: str, source: str, source_kind: str, path: Path, owned: bool,
            info: ModelInfo) -> Entry:
        created = time.time()
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO models (name, source, source_kind, path, owned, info, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "source=excluded.source, source_kind=excluded.source_kind, path=excluded.path, "
                "owned=excluded.owned, info=excluded.info",
                (name, source, source_kind, str(path), int(owned), json.dumps(info.to_dict()), created),
            )
        return Entry(name, source, source_kind, path, owned, info, created)

    def remove(self, name: str) -> bool:
        with self._connect() as conn:
            cur = conn.execute("DELETE FROM models WHERE name = ?", (name,))
            conn.execute("DELETE FROM measurements WHERE name = ?", (name,))
        return cur.rowcount > 0

    def record_measurement(self, name: str, nbytes: int, device: str) -> None:
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO measurements (name, bytes, device, measured_at) VALUES (?, ?, ?, ?)",
                         (name, int(nbytes), device, time.time()))

    def measurements(self) -> dict[str, int]:
        with self._connect() as conn:
            return {r[0]: int(r[1]) for r in conn.execute("SELECT name, bytes FROM measurements")}

    def names(self) -> set[str]:
        with self._connect() as conn:
            return {r[0] for r in conn.execute("SELECT name FROM models")}
