"""The command line itself: help, version, errors as one clear line."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import run_cli


def test_help_imports_no_heavy_library() -> None:
    code = ("import sys; from corral.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'sentence_transformers', "
            "'huggingface_hub', 'spacy', 'ray') if m in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pull" in out and "inspect" in out and "chat" in out
    assert "HEAVY []" in out


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("corral ")


def test_unknown_model_is_one_clear_line() -> None:
    r = run_cli("run", "no-such-model", "hi")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0] == "error: no model, alias or file named 'no-such-model'"
    assert r.stderr.splitlines()[1].startswith("hint: ")


def test_bad_flag_is_one_clear_line() -> None:
    r = run_cli("run", "smollm2", "--no-such-flag")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unrecognized arguments: --no-such-flag" in r.stderr


def test_bad_flag_value() -> None:
    r = run_cli("run", "smollm2", "hi", "--temperature", "5")
    assert r.returncode == 2
    assert "--temperature must be between 0 and 2" in r.stderr
    r = run_cli("run", "smollm2", "hi", "--device", "tpu")
    assert r.returncode == 2 and "unknown device 'tpu'" in r.stderr


def test_missing_path_and_bad_reference() -> None:
    r = run_cli("inspect", "./does/not/exist")
    assert r.returncode == 1 and "no such file or folder" in r.stderr
    r = run_cli("pull", "hf:not a repo")
    assert r.returncode == 2 and "not a valid Hugging Face repo id" in r.stderr
    assert "Traceback" not in r.stderr


def test_pull_offline_fails_fast_with_message() -> None:
    r = run_cli("pull", "hf:someone/some-model", "-q", env={"HF_HUB_OFFLINE": "1"}, timeout=60)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "offline" in r.stderr.lower() or "reach" in r.stderr.lower()
