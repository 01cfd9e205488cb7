"""Text-to-video jobs kept in SQLite (``$CORRAL_HOME/videos.db``, schema = its MIGRATIONS) with their
MP4s beside it (``$CORRAL_HOME/videos/<id>.mp4``, written to a temporary file and renamed, so a
file is whole or absent). A job is a row from its creation to its deletion: queued, in_progress,
completed, failed or cancelled. A row left queued or in progress by a process that stopped is
marked failed when the next one opens the file."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from corral.files import write_atomically
from corral.migrations import Step, migrate

MIGRATIONS: tuple[Step, ...] = (
    (  # 1
        """CREATE TABLE IF NOT EXISTS video_jobs (
            id TEXT PRIMARY KEY,
            created_at INTEGER NOT NULL,
            completed_at INTEGER,
            model TEXT NOT NULL,
            prompt TEXT,
            status TEXT NOT NULL,
            progress INTEGER NOT NULL DEFAULT 0,
            seconds TEXT,
            size TEXT,
            frames INTEGER,
            fps INTEGER NOT NULL,
            seed INTEGER,
            error_code TEXT,
            error_message TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS video_jobs_created ON video_jobs(created_at)",
    ),
)
UNFINISHED = ("queued", "in_progress")


@dataclass
class VideoJob:
    id: str
    created_at: int
    model: str
    prompt: str | None
    fps: int
    status: str = "queued"
    progress: int = 0  # percent
    seconds: str | None = None  # the clip's length: asked for, or once made, its own
    size: str | None = None  # WIDTHxHEIGHT: asked for, or once made, its own
    frames: int | None = None
    seed: int | None = None
    completed_at: int | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


COLUMNS = tuple(f.name for f in fields(VideoJob))


class VideoJobStore:
    """The rows and files of video jobs; every method is short and thread-safe."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "videos"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "videos.db"
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        migrate(self._conn, MIGRATIONS, f"the video jobs {self.path}")
        self._conn.row_factory = sqlite3.Row
        with self._lock, self._conn:
            self._conn.execute("UPDATE video_jobs SET status = 'failed', error_code = 'server_stopped', "
                               "error_message = 'the server stopped before the video was made', completed_at = ? "
                               "WHERE status IN ('queued', 'in_progress')", (int(time.time()),))

    def add(self, job: VideoJob) -> None:
        row = asdict(job)
        with self._lock, self._conn:
            self._conn.execute(f"INSERT INTO video_jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                               tuple(row.values()))

    def update(self, job_id: str, **changes: Any) -> None:
        unknown = set(changes) - set(COLUMNS)
        if unknown:
            raise ValueError(f"no such columns: {sorted(unknown)}")
        with self._lock, self._conn:
            self._conn.execute(f"UPDATE video_jobs SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                               (*changes.values(), job_id))

    def get(self, job_id: str) -> VideoJob | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM video_jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else VideoJob(**{k: row[k] for k in COLUMNS})

    def page(self, after: str | None, limit: int, newest_first: bool) -> tuple[list[VideoJob], bool]:
        """Up to ``limit`` jobs after the job ``after`` in creation order (or its reverse), and
        whether more follow."""
        order = "DESC" if newest_first else "ASC"
        where, args = "", ()  # type: tuple[str, tuple[Any, ...]]
        if after is not None and (anchor := self.get(after)) is not None:
            sign = "<" if newest_first else ">"
            where = f"WHERE (created_at, id) {sign} (?, ?)"
            args = (anchor.created_at, anchor.id)
        with self._lock:
            rows = self._conn.execute(f"SELECT * FROM video_jobs {where} ORDER BY created_at {order}, id {order} "
                                      "LIMIT ?", (*args, limit + 1)).fetchall()
        jobs = [VideoJob(**{k: r[k] for k in COLUMNS}) for r in rows]
        return jobs[:limit], len(jobs) > limit

    def unfinished(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM video_jobs WHERE status IN ('queued', 'in_progress')")
                       .fetchone()[0])

    def content_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.mp4"

    def write_content(self, job_id: str, data: bytes) -> Path:
        """The MP4 written whole, or not at all: a temporary file in the same folder, synced, renamed."""
        return write_atomically(self.content_path(job_id), [data])

    def remove(self, job_id: str) -> None:
        """The job's row and file."""
        self.content_path(job_id).unlink(missing_ok=True)
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM video_jobs WHERE id = ?", (job_id,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
