"""Numbered schema migrations for corral's SQLite files (the manifest, the request log).

A file records how many steps it has taken in ``PRAGMA user_version``. Opening it applies the
missing steps in order, all in one ``BEGIN IMMEDIATE`` transaction together with the new number:
a process killed mid-upgrade leaves the file as it was, and two processes opening an old file at
once upgrade it once (the second sees the new number). Step 1 of every file is the schema as it
was before migrations existed, written with ``IF NOT EXISTS``: files from those releases
(user_version 0) take it as a no-op and keep their rows. A step is appended, never edited.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from corral.errors import CorralError


class NewerSchemaError(CorralError):
    """The file was written by a newer corral than this one."""

    http_status = 409


Step = tuple[str, ...]  # SQL statements, run in order


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, steps: Sequence[Step], what: str) -> int:
    """Bring ``conn``'s file up to ``len(steps)``; returns the version it had before."""
    if version(conn) == len(steps):
        return len(steps)
    manual = conn.isolation_level
    conn.isolation_level = None  # the transaction below is ours, statement by statement
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = version(conn)
            if found > len(steps):
                raise NewerSchemaError(
                    f"{what} has schema version {found}, newer than this corral knows ({len(steps)})",
                    "upgrade corral, or point CORRAL_HOME at another folder")
            for step in steps[found:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {len(steps)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.isolation_level = manual
    return found
