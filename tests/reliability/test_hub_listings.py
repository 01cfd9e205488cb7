"""The catalogue's row 2 (issue 18): poisoned hub listings. A stand-in hub (tests/hub_server.py, the real
huggingface_hub client talking to it) lists paths that climb out (``../a``, ``a/../../b``, absolute, backslash,
drive, control characters), digests that are no digests (``../`` in an LFS oid, a blob id or the ETag that names the
cached blob), listings that disagree (a symlink entry where the model listing has a file). Each download is refused
with a one-line corral error before any file body is requested (no ``/resolve/`` request at all for a listing; only
HEADs for an ETag, which only a HEAD tells), and an audit hook (``sys.addaudithook``) sees nothing written while it
runs, outside the HF cache or in it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants as hf_constants
from tests.conftest import registered, run_cli
from tests.hub_server import FakeHub, git_blob_sha1

from corral.errors import DownloadError, OfflineError
from corral.models.download import download_repo

pytestmark = pytest.mark.timeout(60)
WRITES: list[str] = []
WATCHING: list[bool] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _hook(event: str, args: tuple[Any, ...]) -> None:
    """Record every path written (opened for writing, made, linked, renamed to) while a test watches."""
    if not WATCHING:
        return
    target: object = None
    if event == "open" and len(args) >= 3:
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS):
            target = args[0]
    elif event in ("os.mkdir", "os.truncate") and args:
        target = args[0]
    elif event in ("os.symlink", "os.link", "os.rename") and len(args) >= 2:
        target = args[1]
    if isinstance(target, str | bytes | os.PathLike):
        WRITES.append(os.path.abspath(os.fsdecode(target)))


sys.addaudithook(_hook)  # cannot be removed: it records only while a test of this module watches


def _download(hub: FakeHub) -> DownloadError:
    """download_repo against ``hub`` under the watch; the refusal it must end in."""
    WRITES.clear()
    WATCHING.append(True)
    try:
        with pytest.raises(DownloadError) as info:
            download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    finally:
        WATCHING.clear()
    assert not isinstance(info.value, OfflineError)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    return info.value


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Online against the stand-in only; huggingface_hub's import-time copies aligned with the environment."""
    home = Path(os.environ["HF_HOME"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    return home


@pytest.fixture
def hub(tmp_path: Path, hf_home: Path) -> Iterator[FakeHub]:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    (repo / "model.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"{}      " + b"w" * 4000)  # an LFS file
    (repo / "tokenizer.json").write_text("{}")
    with FakeHub(repo, repo_id="org/tiny") as fake:
        yield fake


def _paths(tmp_path: Path) -> list[str]:
    return ["../a", "a/../../b", str(tmp_path / "outside" / "abs.txt"), "..\\a", "a\\..\\..\\b", "a\\b", "C:/x",
            "C:x", "a//b", "./a", "a/", "a\nb", "a\x00b", ""]


@pytest.mark.parametrize("where", ["siblings", "tree"])
def test_paths_that_climb_out_are_refused_before_any_fetch(hub: FakeHub, tmp_path: Path, where: str) -> None:
    for path in _paths(tmp_path):
        hub.extra_siblings.clear()
        hub.extra_tree.clear()
        blob = git_blob_sha1(b"evil")
        if where == "siblings":
            hub.extra_siblings.append({"rfilename": path, "size": 4, "blobId": blob})
        else:  # the model listing is clean; the tree listing (what huggingface_hub downloads from) is not
            hub.extra_tree.append({"type": "file", "path": path, "oid": blob, "size": 4})
        error = _download(hub)
        assert "unsafe file path" in str(error), (path, str(error))
        assert hub.file_gets() == [] and [r for r in hub.requests if "/resolve/" in r.path] == [], path
        assert WRITES == [], (path, WRITES)
    assert list(tmp_path.rglob("abs.txt")) == [] and not (tmp_path.parent / "a").exists()


LFS = {"size": 4016, "pointerSize": 130}


@pytest.mark.parametrize(("where", "path", "fields"), [
    ("siblings", "model.safetensors", {"lfs": {**LFS, "sha256": "../../../../evil"}}),
    ("siblings", "model.safetensors", {"lfs": {**LFS, "sha256": "z" * 64}}),
    ("siblings", "config.json", {"blobId": "../../blobs/../../evil"}),
    ("siblings", "config.json", {"blobId": "g" * 40}),
    ("siblings", "config.json", {"size": -5}),
    ("tree", "model.safetensors", {"lfs": {**LFS, "oid": "/etc/passwd"}}),
    ("tree", "model.safetensors", {"lfs": {**LFS, "oid": "0" * 63 + "/"}}),
    ("tree", "config.json", {"oid": "../" * 10 + "x"}),
    ("tree", "config.json", {"oid": "not hex"}),
])
def test_digests_that_are_no_digests_are_refused(hub: FakeHub, where: str, path: str,
                                                 fields: dict[str, object]) -> None:
    (hub.sibling_overrides if where == "siblings" else hub.tree_overrides)[path] = fields
    error = _download(hub)
    assert "refusing the hub's listing" in str(error) and path in str(error)
    assert [r for r in hub.requests if "/resolve/" in r.path] == [] and WRITES == []


def test_listings_that_disagree_are_refused(hub: FakeHub) -> None:
    hub.tree_overrides["model.safetensors"] = {"type": "symlink", "target": "/etc/passwd"}  # a file in the other
    assert "listings disagree about 'model.safetensors'" in str(_download(hub))
    hub.tree_overrides["model.safetensors"] = {"lfs": {**LFS, "oid": "0" * 64}}  # a valid digest, another file
    assert "listings disagree about 'model.safetensors'" in str(_download(hub))
    assert [r for r in hub.requests if "/resolve/" in r.path] == [] and WRITES == []


@pytest.mark.parametrize("etag", ["../../../../../escape", "<absolute>", "<existing>", "a/b"])
@pytest.mark.parametrize("path", ["model.safetensors", "config.json"])  # X-Linked-Etag / ETag
def test_an_etag_that_would_name_a_file_outside_the_cache_is_refused(hub: FakeHub, tmp_path: Path, path: str,
                                                                     etag: str) -> None:
    existing = tmp_path / "existing.txt"  # as a blob name, the snapshot entry would be a link out of the cache
    existing.write_text("keep")
    hub.etags[path] = {"<absolute>": str(tmp_path / "escape"), "<existing>": str(existing)}.get(etag, etag)
    error = _download(hub)
    assert "unusable ETag" in str(error) and path in str(error)
    assert hub.file_gets() == []  # the metadata (HEAD) told it; no body was asked for
    assert WRITES == [] and list(tmp_path.rglob("escape*")) == [] and existing.read_text() == "keep"


def test_the_watch_sees_writes_and_a_clean_listing_downloads(hub: FakeHub, hf_home: Path) -> None:
    WRITES.clear()
    WATCHING.append(True)
    try:
        snapshot = download_repo("org/tiny", endpoint=hub.endpoint, progress=False)
    finally:
        WATCHING.clear()
    assert (snapshot / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
    assert any(w.startswith(str(snapshot)) for w in WRITES)  # the hook is live: the pointers were seen
    assert [w for w in WRITES if w != str(hf_home) and not w.startswith(str(hf_home) + os.sep)] == []


def test_the_cli_refuses_a_poisoned_listing_and_registers_nothing(hub: FakeHub) -> None:
    hub.extra_tree.append({"type": "file", "path": "../../x", "oid": git_blob_sha1(b"x"), "size": 1})
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"}
    pulled = run_cli("pull", "hf:org/tiny", "--quiet", env=env)
    assert pulled.returncode != 0 and "unsafe file path '../../x'" in pulled.stderr, pulled.stderr
    assert "Traceback" not in pulled.stderr and hub.file_gets() == []
    listed = run_cli("list", "--json")
    assert listed.returncode == 0 and registered(json.loads(listed.stdout)) == []
