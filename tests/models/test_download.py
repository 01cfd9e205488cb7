"""download_repo against a real local HTTP hub, with the real huggingface_hub client (no mocks)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from tests.hub_server import FakeHub

from corral.errors import BadReferenceError, DownloadError, OfflineError
from corral.models.download import download_repo

MiB = 1024 * 1024
# huggingface_hub writes response bodies in chunks of this size: only whole chunks survive a broken connection.
HF_CHUNK = hf_constants.DOWNLOAD_CHUNK_SIZE


def _safetensors(n_floats: int, seed: int = 0) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + random.Random(seed).randbytes(4 * n_floats)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Online mode, and an HF_HOME under tmp_path; returns the hub cache folder the library must use."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub reads these once, at import time: align them with the environment above.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    return home / "hub"


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    repo = tmp_path / "src_repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 8}))
    (repo / "model.safetensors").write_bytes(_safetensors(1024))  # ~4 KB, served as an LFS file
    (repo / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"vocab": {"a": 0}}}))
    return repo


@pytest.fixture
def hub(repo_dir: Path) -> Iterator[FakeHub]:
    with FakeHub(repo_dir, repo_id="org/tiny") as fake:
        yield fake


def _assert_same_tree(snapshot: Path, repo: Path) -> None:
    want = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    got = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert got == want
    for rel in want:
        assert (snapshot / rel).read_bytes() == (repo / rel).read_bytes(), rel


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.timeout(60)
def test_downloads_into_hf_cache_then_reuses_it(hub: FakeHub, repo_dir: Path, hf_cache: Path) -> None:
    snapshot = download_repo("org/tiny", endpoint=hub.endpoint, progress=False)

    storage = hf_cache / "models--org--tiny"
    assert snapshot == (storage / "snapshots" / hub.commit).resolve()
    _assert_same_tree(snapshot, repo_dir)
    assert (storage / "refs" / "main").read_text() == hub.commit
    weights = snapshot / "model.safetensors"
    assert weights.is_symlink()  # standard layout: snapshot links into blobs/<etag>
    sha256 = hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()
    assert Path(os.path.realpath(weights)) == (storage / "blobs" / sha256).resolve()
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.file_gets()}
    assert fetched == {"config.json", "model.safetensors", "tokenizer.json"}

    before = len(hub.requests)
    again = download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    assert again == snapshot
    new = hub.requests[before:]
    assert [r for r in new if "/resolve/" in r.path] == []  # no file body, not even a HEAD
    _assert_same_tree(again, repo_dir)


@pytest.mark.timeout(60)
def test_endpoint_is_read_from_hf_endpoint_at_call_time(
    hub: FakeHub, repo_dir: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    snapshot = download_repo("org/tiny", progress=False)
    _assert_same_tree(snapshot, repo_dir)
    assert hub.file_gets()


@pytest.mark.timeout(60)
def test_interrupted_download_resumes_with_range(tmp_path: Path, hf_cache: Path) -> None:
    repo = tmp_path / "big_repo"
    repo.mkdir()
    (repo / "config.json").write_text("{}")
    (repo / "model.safetensors").write_bytes(_safetensors((HF_CHUNK + 2 * MiB) // 4, seed=1))
    size = (repo / "model.safetensors").stat().st_size
    with FakeHub(repo, repo_id="org/big") as fake:
        fake.cut_file("model.safetensors", after=HF_CHUNK + MiB)  # connection dies 1 MiB into the 2nd chunk

        snapshot = download_repo("org/big", endpoint=fake.endpoint, progress=False)

        gets = fake.gets_of("model.safetensors")
    # huggingface_hub 2.4.0 resumes inside the same call (http_get retries on a broken body), from the
    # last whole chunk it wrote: the second GET asks for the rest only.
    assert [g.range for g in gets] == [None, f"bytes={HF_CHUNK}-"]
    resumed_at = int(gets[1].range.removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
    assert 0 < resumed_at < size
    _assert_same_tree(snapshot, repo)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_download_that_keeps_breaking_fails_cleanly_and_a_retry_completes(hf_cache: Path, repo_dir: Path) -> None:
    with FakeHub(repo_dir, repo_id="org/tiny") as fake:
        fake.cut_file("model.safetensors", after=100, times=100)  # more than the library's 5 in-call retries
        fake.corrupt.add("config.json")  # arrives "fine" during the failing call: must still be checked
        with pytest.raises(DownloadError, match="interrupted") as info:
            download_repo("org/tiny", endpoint=fake.endpoint, progress=False)
        assert "\n" not in str(info.value)
        snapshot_dir = hf_cache / "models--org--tiny" / "snapshots" / fake.commit
        assert not os.path.lexists(snapshot_dir / "model.safetensors")
        assert not os.path.lexists(snapshot_dir / "config.json")  # the corrupt one was swept on the way out
        assert (snapshot_dir / "tokenizer.json").is_file()  # the good one is kept
        assert not list((hf_cache / "models--org--tiny" / "blobs").glob("*.incomplete"))

        fake.cut_file("model.safetensors", after=100, times=0)
        fake.corrupt.clear()
        snapshot = download_repo("org/tiny", endpoint=fake.endpoint, progress=False)
    _assert_same_tree(snapshot, repo_dir)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])  # LFS sha256 / git blob sha1
def test_corrupt_file_is_detected_and_not_left_in_cache(
    hub: FakeHub, repo_dir: Path, hf_cache: Path, name: str
) -> None:
    hub.corrupt.add(name)
    with pytest.raises(DownloadError, match=name) as info:
        download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    assert not isinstance(info.value, OfflineError)
    storage = hf_cache / "models--org--tiny"
    assert not os.path.lexists(storage / "snapshots" / hub.commit / name)
    assert hub.etag(name) not in {p.name for p in (storage / "blobs").iterdir()}

    hub.corrupt.clear()
    snapshot = download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    _assert_same_tree(snapshot, repo_dir)


@pytest.mark.timeout(30)
def test_connection_refused_is_offline_error(hf_cache: Path) -> None:
    with pytest.raises(OfflineError, match="cannot reach") as info:
        download_repo("org/tiny", endpoint=f"http://127.0.0.1:{_closed_port()}", progress=False)
    assert "register a local" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.timeout(60)
def test_unreachable_hub_falls_back_to_complete_cache(repo_dir: Path, hf_cache: Path) -> None:
    with FakeHub(repo_dir, repo_id="org/tiny") as fake:
        first = download_repo("org/tiny", endpoint=fake.endpoint, progress=False)
    assert download_repo("org/tiny", endpoint=f"http://127.0.0.1:{_closed_port()}", progress=False) == first


@pytest.mark.timeout(30)
def test_offline_mode_with_empty_cache(hub: FakeHub, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="offline") as info:
        download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    assert "register a local" in str(info.value)
    assert hub.requests == []


@pytest.mark.timeout(60)
def test_offline_mode_serves_a_complete_cache(
    hub: FakeHub, repo_dir: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    before = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_repo("org/tiny", endpoint=hub.endpoint, progress=False) == first
    assert len(hub.requests) == before


@pytest.mark.timeout(30)
def test_unknown_repo(hub: FakeHub, hf_cache: Path) -> None:
    with pytest.raises(DownloadError, match="not found") as info:
        download_repo("org/missing", endpoint=hub.endpoint, progress=False)
    assert not isinstance(info.value, OfflineError)
    assert "org/missing" in str(info.value)


@pytest.mark.timeout(30)
def test_unknown_revision(hub: FakeHub, hf_cache: Path) -> None:
    with pytest.raises(DownloadError, match="revision not found"):
        download_repo("org/tiny", "v9", endpoint=hub.endpoint, progress=False)


@pytest.mark.timeout(30)
def test_gated_repo_asks_to_log_in(hub: FakeHub, hf_cache: Path) -> None:
    hub.gated = True
    with pytest.raises(DownloadError, match="hf auth login"):
        download_repo("org/tiny", endpoint=hub.endpoint, progress=False)


@pytest.mark.timeout(30)
def test_malformed_repo_id(hf_cache: Path) -> None:
    with pytest.raises(BadReferenceError):
        download_repo("org/../x", endpoint=f"http://127.0.0.1:{_closed_port()}", progress=False)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("evil", ["../evil.txt", "sub/../../evil.txt", "<absolute>"])
def test_path_escaping_the_snapshot_is_refused(hub: FakeHub, hf_cache: Path, tmp_path: Path, evil: str) -> None:
    if evil == "<absolute>":
        evil = (tmp_path / "outside" / "evil.txt").as_posix()
    hub.files[evil] = b"pwned"
    with pytest.raises(DownloadError, match="unsafe file path"):
        download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    assert list(tmp_path.rglob("evil.txt")) == []
    assert hub.file_gets() == []  # refused before any file was fetched


@pytest.mark.timeout(30)
def test_progress_bars_are_silent_when_disabled(
    hub: FakeHub, hf_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    assert "Fetching" not in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_progress_callback_counts_bytes_up_to_the_total(hub: FakeHub, repo_dir: Path, hf_cache: Path) -> None:
    from corral.models.download import PullProgress

    hub.files["model.safetensors"] = _safetensors(3 * MiB // 4)  # 3 MiB: written in several pieces
    events: list[PullProgress] = []
    download_repo("org/tiny", endpoint=hub.endpoint, progress=events.append)
    total = sum(len(content) for content in hub.files.values())
    assert events[0].completed == 0 and events[-1].completed == total
    assert all(e.total == total and e.repo == "org/tiny" for e in events)
    done = [e.completed for e in events]
    assert done == sorted(done) and len(set(done)) > 2  # increasing, with steps between start and end


@pytest.mark.timeout(60)
def test_runtime_pull_reports_progress_and_a_second_pull_changes_nothing(
        hub: FakeHub, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from corral.config import load_settings
    from corral.models.store import Store
    from corral.runtime.runtime import RuntimeOptions, build_runtime

    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    settings = load_settings()
    store = Store(settings.manifest_path)
    runtime = build_runtime(settings, store, RuntimeOptions(budget_bytes=2**30))
    events: list[object] = []
    first = asyncio.run(runtime.pull("hf:org/tiny", progress=events.append))
    assert events and first.source == "hf:org/tiny"
    gets = len(hub.file_gets())
    again = asyncio.run(runtime.pull("hf:org/tiny", progress=events.append))
    assert again == first and [e.name for e in store.list()] == [first.name]
    assert len(hub.file_gets()) == gets  # nothing downloaded again
