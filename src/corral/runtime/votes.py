"""Blind-comparison votes (the web UI's compare page, or a script): which of the compared models gave
the best answer, or a tie, kept in ``votes.db`` under the data folder (its own SQLite file, migrated
like the others; prompts are not stored), and the win table they add up to: per model, wins, losses
and ties against the others it was compared with."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from corral.errors import UsageError
from corral.migrations import Step, migrate

MIGRATIONS: tuple[Step, ...] = (
    (  # 1
        """CREATE TABLE IF NOT EXISTS votes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            models TEXT NOT NULL,
            winner TEXT
        )""",
    ),
)
TIE = "tie"


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    migrate(conn, MIGRATIONS, f"the votes file {path}")
    return conn


def record(path: Path, models: list[str], winner: str) -> int:
    """Store one vote: ``winner`` one of ``models`` (2 to 6 distinct names), or "tie"."""
    if not 2 <= len(models) <= 6 or len(set(models)) != len(models):
        raise UsageError("a vote needs 2 to 6 distinct models")
    if winner != TIE and winner not in models:
        raise UsageError(f"the winner {winner[:100]!r} is not one of the models compared", 'or vote "tie"')
    conn = _open(path)
    try:
        with conn:
            cursor = conn.execute("INSERT INTO votes (ts, models, winner) VALUES (?, ?, ?)",
                                  (time.time(), json.dumps(models), None if winner == TIE else winner))
        return int(cursor.lastrowid or 0)
    finally:
        conn.close()


def win_table(path: Path) -> list[dict[str, Any]]:
    """Per model: votes it took part in, wins, losses, ties, and its win rate; best first."""
    if not path.exists():
        return []
    conn = _open(path)
    try:
        rows = conn.execute("SELECT models, winner FROM votes").fetchall()
    finally:
        conn.close()
    table: dict[str, dict[str, Any]] = {}
    for models_json, winner in rows:
        for model in json.loads(models_json):
            row = table.setdefault(model, {"model": model, "votes": 0, "wins": 0, "losses": 0, "ties": 0})
            row["votes"] += 1
            row["ties" if winner is None else "wins" if winner == model else "losses"] += 1
    for row in table.values():
        row["win_rate"] = round(row["wins"] / row["votes"], 4)
    return sorted(table.values(), key=lambda r: (-r["win_rate"], -r["wins"], r["model"]))
