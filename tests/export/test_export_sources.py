"""Where an export gets its model and what it refuses: an hf: model pinned to the 40-hex commit it was
pulled at (and fetched at that commit by fetch_model.py), a local folder copied in, a hostile path
that cannot inject code, a remote model refused, pickle only with the opt-in, an existing folder
never overwritten without --force."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.export.helpers import Exported, check_files, clean_env, export, selftest
from tests.fixtures.tiny_media import build_sentence_transformer
from tests.hub_server import FakeHub


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sentence_transformer(tmp_path_factory.mktemp("st") / "tiny-st").path


def constants(serve_py: Path) -> dict[str, object]:
    """The module-level constants of a generated serve.py, read without running it."""
    tree = ast.parse(serve_py.read_text())
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()
            and isinstance(node.value, (ast.Constant, ast.Tuple, ast.List))}


@pytest.fixture
def hub(tiny_st: Path) -> Iterator[FakeHub]:
    with FakeHub(tiny_st, repo_id="org/tiny-st") as server:
        yield server


def test_an_hf_model_is_fetched_at_its_commit(hub: FakeHub, tmp_path: Path) -> None:
    online = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"}
    assert run_cli("pull", "hf:org/tiny-st", "-q", env=online).returncode == 0
    out = tmp_path / "export"
    result = export("org/tiny-st", out)
    assert result["source"] == "hf" and "fetch_model.py" in result["files"] and "model/" not in result["files"]
    fetch = constants(out / "fetch_model.py")
    assert fetch["REPO"] == "org/tiny-st" and re.fullmatch(r"[0-9a-f]{40}", str(fetch["COMMIT"]))
    assert "huggingface_hub==" in (out / "requirements.txt").read_text()
    dockerfile = (out / "Dockerfile").read_text()
    assert "fetch_model.py /model" in dockerfile and dockerfile.index("fetch_model.py /model") < dockerfile.index(
        "HF_HUB_OFFLINE=1")
    check_files(out)

    # what the image does at build time, here: fetch at the commit, then serve offline from the fetched copy
    before = len(hub.requests)
    fetched = subprocess.run([sys.executable, "fetch_model.py", str(tmp_path / "fetched")], cwd=out, text=True,
                             capture_output=True, env=clean_env(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0",
                                                                HF_HOME=str(tmp_path / "other-hf")))
    assert fetched.returncode == 0, fetched.stderr
    asked = [r.path for r in hub.requests[before:] if "/resolve/" in r.path]
    assert asked and all(f"/resolve/{fetch['COMMIT']}/" in path for path in asked)
    assert (tmp_path / "fetched" / "model.safetensors").is_file()
    checked = selftest(out, sys.executable, "--model-path", str(tmp_path / "fetched"))
    assert checked.returncode == 0, checked.stderr


HOSTILE = "evil'\"; $(touch PWNED) `touch PWNED2`\n__import__('os').system('touch PWNED3') #"


def test_a_hostile_path_cannot_inject_code(tiny_st: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models" / HOSTILE
    shutil.copytree(tiny_st, folder)
    out = tmp_path / "export"
    result = export(str(folder), out)
    assert result["source"] == "copy" and "model/" in result["files"]
    serve = out / "serve.py"
    assert subprocess.run([sys.executable, "-m", "py_compile", str(serve)]).returncode == 0
    found = constants(serve)
    assert found["EXPORTED_PATH"] == str(folder) and found["SOURCE"] == str(folder)
    assert found["BUNDLED"] == "model"
    check_files(out)
    moved = tmp_path / "elsewhere"
    out.rename(moved)  # the export works from wherever it is copied, with the model beside serve.py
    shutil.rmtree(folder)
    checked = selftest(moved)
    assert checked.returncode == 0, checked.stderr
    with Exported(moved) as server, server.client() as http:
        assert http.post("/v1/embeddings", json={"input": "hello"}).status_code == 200
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    readme = (moved / "README.md").read_text()
    assert "$(touch PWNED)" not in readme.split("```")[1]  # nothing of the name in the shell blocks


def test_a_remote_model_is_refused(tmp_path: Path) -> None:
    config = Path(os.environ["CORRAL_CONFIG"])
    config.write_text('[providers.up]\ntype = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n')
    done = run_cli("export", "up/some-model", "-o", str(tmp_path / "out"))
    assert done.returncode != 0
    assert "remote model" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_pickle_weights_need_the_opt_in(tiny_st: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_st, folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    refused = run_cli("export", str(folder), "-o", str(tmp_path / "a"))
    assert refused.returncode != 0 and "--allow-pickle" in refused.stderr
    assert not (tmp_path / "a").exists()
    export(str(folder), tmp_path / "b", "--allow-pickle")
    assert constants(tmp_path / "b" / "serve.py")["ALLOW_PICKLE"] is True
    assert "pickle-based weight files load" in (tmp_path / "b" / "README.md").read_text()


def test_an_existing_folder_is_kept_unless_forced(tiny_st: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "out"
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("keep me")
    refused = run_cli("export", str(tiny_st), "-o", str(out))
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert (out / "mine.txt").read_text() == "keep me"
    forced = run_cli("export", str(tiny_st), "-o", str(out), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert not (out / "mine.txt").exists() and (out / "serve.py").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no half-built or old folder left
    assert json.loads(forced.stdout)["files"][-1] == "serve.py"
