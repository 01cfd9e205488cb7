"""Conversations the runtime keeps for apps that hold no history of their own (``/api/conversations``,
the sidecar's ``conversations/*``, ``corral chat --save/--resume``): each one's model (a model, an
alias or a preset name, passed on as given), persona (system prompt), optional name and messages, in
SQLite under the data folder (``conversations.db``, WAL, schema = its MIGRATIONS). Prompt text is
kept here only, and only because someone asked for a conversation.

- Retention: a conversation not written to for ``[runtime] conversation_retention`` (default 30d;
  -1: forever) is gone at once for every read (404), and its rows are deleted when the store opens,
  on every write (create, append) and on every listing.
- One answer at a time: a send claims its conversation (an exclusive ``flock`` on its lock file in
  ``conversations.locks/``), held until the answer is stored or has failed, released by the OS if
  the process dies. A second send meanwhile, from this process or another, is refused: 409.
- The context window: the store keeps every message; ``skipped`` records how many of the oldest
  ones the last prompt left out to fit the model's context. That window only moves forward, so a
  long conversation is not retried from its start on every message.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import ConflictError, ContextLengthError, CorralError, UsageError
from corral.migrations import migrate

MIGRATIONS = [("CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, name TEXT UNIQUE, model TEXT NOT NULL, "
               "system TEXT, created REAL NOT NULL, updated REAL NOT NULL, skipped INTEGER NOT NULL DEFAULT 0)",
               "CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated)",
               "CREATE TABLE IF NOT EXISTS messages (conversation TEXT NOT NULL, seq INTEGER NOT NULL, "
               "role TEXT NOT NULL, content TEXT NOT NULL, PRIMARY KEY (conversation, seq)) WITHOUT ROWID")]
ID = re.compile(r"^conv_[0-9a-f]{24}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_COLUMNS = "id, name, model, system, created, updated, skipped"


class ConversationNotFoundError(CorralError):
    """No kept conversation has that id or name (unknown, deleted, or past its retention)."""

    http_status = 404


class ConversationBusyError(ConflictError):
    """The conversation is answering another message right now."""


@dataclass(frozen=True)
class Conversation:
    id: str
    name: str | None
    model: str
    system: str | None
    created: float
    updated: float
    skipped: int  # the oldest messages the last prompt left out (the context window's start)
    messages: tuple[dict[str, str], ...] = ()
    count: int = 0  # messages kept (also when ``messages`` was not read: a listing)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "conversation", "name": self.name, "model": self.model,
                "system": self.system, "created": int(self.created), "updated": int(self.updated),
                "messages": [dict(m) for m in self.messages]}

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "object": "conversation", "name": self.name, "model": self.model,
                "created": int(self.created), "updated": int(self.updated), "message_count": self.count}


class Claim:
    """A conversation claimed for one answer: its lock file open with an exclusive ``flock``.
    ``release`` is idempotent; a claim collected unreleased is released then."""

    def __init__(self, conversation_id: str, fd: int) -> None:
        self.conversation_id, self._fd = conversation_id, fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the only descriptor drops the flock

    def __del__(self) -> None:
        self.release()


def not_found(what: str) -> ConversationNotFoundError:
    return ConversationNotFoundError(f"no conversation {what[:100]!r} is kept here (unknown, deleted, or older than "
                                     "[runtime] conversation_retention)",
                                     "create one with POST /api/conversations; GET /api/conversations lists them")


class ConversationStore:
    """Every method is short, thread-safe and opens its own connection; async callers run them off the
    event loop. ``clock``: wall-clock seconds (tests pass their own)."""

    def __init__(self, data_dir: Path, retention: float, clock: Callable[[], float] = time.time) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path, self.locks = data_dir / "conversations.db", data_dir / "conversations.locks"
        self.retention, self.clock = retention, clock
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            migrate(conn, MIGRATIONS, f"the conversations {self.path}")
        self.expire()

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            if write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if write:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _cutoff(self) -> float:
        return self.clock() - self.retention if self.retention >= 0 else float("-inf")

    def _purge(self, conn: sqlite3.Connection) -> list[str]:
        """Delete the expired conversations (inside the caller's write transaction); their ids."""
        cutoff = self._cutoff()
        ids = [str(r[0]) for r in conn.execute("SELECT id FROM conversations WHERE updated < ?", (cutoff,))]
        conn.executemany("DELETE FROM messages WHERE conversation = ?", [(i,) for i in ids])
        conn.execute("DELETE FROM conversations WHERE updated < ?", (cutoff,))
        return ids

    def _unlock_files(self, ids: list[str]) -> None:
        for cid in ids:
            with contextlib.suppress(FileNotFoundError):
                (self.locks / f"{cid}.lock").unlink()

    def expire(self) -> int:
        """Delete every conversation past the retention; how many."""
        if self.retention < 0:
            return 0
        with self._connect(write=True) as conn:
            ids = self._purge(conn)
        self._unlock_files(ids)
        return len(ids)

    def create(self, model: str, system: str | None = None, name: str | None = None) -> Conversation:
        if name is not None and not NAME.match(name):
            raise UsageError(f"cannot name a conversation {name[:100]!r}: use 1-64 letters, digits, '.', '_' or '-'")
        now, cid = self.clock(), "conv_" + secrets.token_hex(12)
        with self._connect(write=True) as conn:
            expired = self._purge(conn)
            if name is not None and conn.execute("SELECT 1 FROM conversations WHERE name = ?", (name,)).fetchone():
                raise ConflictError(f"a conversation named {name!r} already exists",
                                    f"continue it with --resume {name}, or choose another name")
            conn.execute(f"INSERT INTO conversations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0)",
                         (cid, name, model, system, now, now))
        self._unlock_files(expired)
        return Conversation(cid, name, model, system, now, now, 0)

    def _find(self, where: str, value: str) -> Conversation | None:
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM conversations WHERE {where} = ? AND updated >= ?",
                               (value, self._cutoff())).fetchone()
            if row is None:
                return None
            messages = tuple({"role": str(r), "content": str(c)} for r, c in conn.execute(
                "SELECT role, content FROM messages WHERE conversation = ? ORDER BY seq", (row[0],)))
        return _conversation(row, messages, len(messages))

    def get(self, cid: str) -> Conversation:
        found = self._find("id", cid) if ID.match(cid) else None
        if found is None:
            raise not_found(cid)
        return found

    def named(self, name: str) -> Conversation:
        found = self._find("name", name)
        if found is None:
            raise ConversationNotFoundError(f"no saved chat is named {name[:100]!r} (unknown, deleted, or older than "
                                            "[runtime] conversation_retention)",
                                            "start one with corral chat MODEL --save NAME")
        return found

    def recent(self, limit: int = 100) -> list[Conversation]:
        """The kept conversations, the latest written first, without their messages (``count`` set)."""
        self.expire()
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS}, (SELECT COUNT(*) FROM messages WHERE conversation = id) "
                                "FROM conversations WHERE updated >= ? ORDER BY updated DESC, id LIMIT ?",
                                (self._cutoff(), limit)).fetchall()
        return [_conversation(row, (), int(row[7])) for row in rows]

    def claim(self, cid: str) -> Claim:
        """Claim ``cid`` for one answer; 404 when it is not kept, 409 while another answer holds it."""
        import fcntl

        self.get(cid)  # also checks the id's shape before it names a file
        self.locks.mkdir(exist_ok=True)
        fd = os.open(self.locks / f"{cid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConversationBusyError(f"conversation {cid} is answering another message right now",
                                        "send the next message once that answer has ended") from None
        return Claim(cid, fd)

    def append(self, claim: Claim, user: str, assistant: str, skipped: int) -> None:
        """Store one exchange (the user's message, then the answer) and the window's start."""
        with self._connect(write=True) as conn:
            self._write(conn, claim.conversation_id, skipped)
            start = int(conn.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM messages WHERE conversation = ?",
                                     (claim.conversation_id,)).fetchone()[0])
            conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)",
                             [(claim.conversation_id, start, "user", user),
                              (claim.conversation_id, start + 1, "assistant", assistant)])
            expired = self._purge(conn)
        self._unlock_files(expired)

    def clear(self, claim: Claim) -> None:
        """Forget the messages (the model and the system prompt stay)."""
        with self._connect(write=True) as conn:
            self._write(conn, claim.conversation_id, 0)
            conn.execute("DELETE FROM messages WHERE conversation = ?", (claim.conversation_id,))

    def _write(self, conn: sqlite3.Connection, cid: str, skipped: int) -> None:
        changed = conn.execute("UPDATE conversations SET updated = ?, skipped = ? WHERE id = ? AND updated >= ?",
                               (self.clock(), skipped, cid, self._cutoff())).rowcount
        if not changed:
            raise not_found(cid)  # deleted (or expired) while it was answering

    def delete(self, cid: str) -> bool:
        if not ID.match(cid):
            return False
        with self._connect(write=True) as conn:
            conn.execute("DELETE FROM messages WHERE conversation = ?", (cid,))
            gone = conn.execute("DELETE FROM conversations WHERE id = ? AND updated >= ?",
                                (cid, self._cutoff())).rowcount > 0
        self._unlock_files([cid])
        return gone


def _conversation(row: Any, messages: tuple[dict[str, str], ...], count: int) -> Conversation:
    """A row of ``_COLUMNS`` as a Conversation."""
    cid, name, model, system, created, updated, skipped = row[:7]
    return Conversation(str(cid), name, str(model), system, float(created), float(updated), int(skipped), messages,
                        count)


def prompt_messages(conversation: Conversation, skipped: int, content: str) -> list[dict[str, str]]:
    """What a send asks the model: the system prompt (never left out), the messages from the window's
    start, and the new user message (never left out)."""
    head = [{"role": "system", "content": conversation.system}] if conversation.system else []
    return [*head, *(dict(m) for m in conversation.messages[skipped:]), {"role": "user", "content": content}]


def too_long(exc: BaseException) -> bool:
    """Whether ``exc`` says the prompt does not fit the model's context: a local engine's
    ContextLengthError, or the router's failure for a remote target that said so."""
    return isinstance(exc, ContextLengthError) or getattr(exc, "too_long", False) is True


def widen(skipped: int, total: int) -> int | None:
    """The next window start: one more exchange (a user message and its answer) left out; None when
    every kept message is already left out."""
    return None if skipped >= total else min(total, skipped + 2)
