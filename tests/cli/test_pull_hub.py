"""`corral pull hf:...` end to end: a real hub-shaped HTTP server on 127.0.0.1, the real
huggingface_hub client inside the real CLI, then the downloaded model runs offline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import registered, run_cli
from tests.fixtures.tiny_models import build_causal_lm
from tests.hub_server import FakeHub


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_causal_lm("llama", tmp_path_factory.mktemp("llama")).path


@pytest.fixture
def hub(tiny_llama: Path) -> Iterator[FakeHub]:
    with FakeHub(tiny_llama, repo_id="org/tiny-llama") as server:
        yield server


def online(hub: FakeHub) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}


@pytest.mark.slow
def test_pull_then_run_offline_then_rm(hub: FakeHub, tmp_path: Path) -> None:
    r = run_cli("pull", "hf:org/tiny-llama", env=online(hub))
    assert r.returncode == 0, r.stderr
    assert "registered org/tiny-llama (safetensors" in r.stdout
    assert "chat, complete" in r.stdout
    assert "100%" in r.stderr  # huggingface_hub's own progress bars
    entry = json.loads(run_cli("list", "--json").stdout)[0]
    assert entry["owned"] is True and entry["source"] == "hf:org/tiny-llama"
    snapshot = Path(entry["path"])
    assert snapshot.parent.name == "snapshots" and "models--org--tiny-llama" in str(snapshot)
    assert str(snapshot).startswith(str(tmp_path / "hf-home"))  # the standard HF cache under HF_HOME

    # the hub is no longer needed: offline run by name, through the transformers engine
    r = run_cli("run", "org/tiny-llama", "hello", "--temperature", "0", "--max-tokens", "5", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["usage"]["completion_tokens"] <= 5

    r = run_cli("rm", "org/tiny-llama", "--delete-files")
    assert r.returncode == 0 and "deleted" in r.stdout
    assert not snapshot.exists()


def test_bare_repo_id_and_second_pull_uses_cache(hub: FakeHub) -> None:
    assert run_cli("pull", "org/tiny-llama", "-q", env=online(hub)).returncode == 0
    bodies = len(hub.file_gets())
    assert bodies > 0
    assert run_cli("pull", "org/tiny-llama", "-q", env=online(hub)).returncode == 0
    assert len(hub.file_gets()) == bodies  # nothing downloaded again


def test_corrupt_file_fails_and_registers_nothing(hub: FakeHub) -> None:
    hub.corrupt.add("model.safetensors")
    r = run_cli("pull", "hf:org/tiny-llama", "-q", env=online(hub))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "model.safetensors" in r.stderr and "failed verification" in r.stderr
    assert registered(json.loads(run_cli("list", "--json").stdout)) == []
    hub.corrupt.clear()
    assert run_cli("pull", "hf:org/tiny-llama", "-q", env=online(hub)).returncode == 0


def test_interrupted_download_resumes(hub: FakeHub) -> None:
    size = len(hub.files["model.safetensors"])
    hub.cut_file("model.safetensors", after=size // 2)
    r = run_cli("pull", "hf:org/tiny-llama", "-q", env=online(hub))
    assert r.returncode == 0, r.stderr
    assert len(hub.gets_of("model.safetensors")) == 2  # cut off once, fetched again in the same pull
    assert json.loads(run_cli("list", "--json").stdout)[0]["parameters"] > 0


def test_unreachable_hub_and_unknown_repo(hub: FakeHub) -> None:
    r = run_cli("pull", "hf:org/missing", "-q", env=online(hub))
    assert r.returncode == 1 and "not found" in r.stderr
    r = run_cli("pull", "hf:org/tiny-llama", "-q",
                env={**online(hub), "HF_ENDPOINT": "http://127.0.0.1:9"}, timeout=60)
    assert r.returncode == 1 and "cannot reach the Hugging Face Hub" in r.stderr
    assert "Traceback" not in r.stderr
