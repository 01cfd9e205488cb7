"""The gateway's config: `corral config init` writes a starter that validates; `config validate`
lists every mistake with its path and exits 1; `config show` prints keys as the variables they come
from, never their values; a key in clear is refused; a Secret never shows its value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import run_cli

from corral.config import load_settings
from corral.targets import Secret

KEY = "sk-PLANTED-0123456789"

BROKEN = '''
[providers.lab]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-in-clear"
[providers.bad]
type = "nosuch"
[providers.slow]
type = "openai"
base_url = "ftp://x"
retries = { max = -1 }
[aliases]
fast = ["lab/small", "opneai/gpt-4o", "nobody"]
'''

CHAINS = '''
[providers.lab]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "${LAB_KEY}"
[providers.org]
type = "groq"
[aliases]
fast = ["lab/small", "smollm2"]
nested = ["fast", "lab/small"]
[aliases.long]
targets = ["lab/small"]
context_fallback = "nowhere/x"
'''


def test_init_writes_a_starter_that_validates(tmp_path: Path) -> None:
    assert run_cli("config", "init").returncode == 0
    assert (tmp_path / "config.toml").read_text().startswith("# corral's config")
    checked = run_cli("config", "validate")
    assert checked.returncode == 0 and checked.stdout.strip().endswith(": ok"), checked.stdout
    again = run_cli("config", "init")
    assert again.returncode == 1 and "exists" in again.stderr and "--force" in again.stderr


def test_validate_lists_every_schema_error_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(BROKEN)
    r = run_cli("config", "validate")
    assert r.returncode == 1
    errors = [line for line in r.stdout.splitlines() if line.startswith("error: ")]
    assert any(e.startswith("error: providers.lab.api_key: a key is never written in clear") for e in errors)
    assert any(e.startswith("error: providers.bad.type: ") for e in errors)
    assert any(e.startswith("error: providers.slow.base_url: base_url must be an http(s) URL") for e in errors)
    assert any(e.startswith("error: providers.slow.retries.max: ") for e in errors)
    assert "sk-in-clear" not in r.stdout + r.stderr
    loaded = run_cli("list")  # every other command stops at the first error, with where it is
    assert loaded.returncode == 2 and "providers." in loaded.stderr and "sk-in-clear" not in loaded.stderr
    assert "corral config validate" in loaded.stderr


def test_validate_checks_targets_chains_and_shadowing(tmp_path: Path, smollm2_path: Path) -> None:
    assert run_cli("pull", str(smollm2_path), "--name", "org/tiny").returncode == 0
    typo = 'typo = ["lab/small", "opneai/gpt-4o", "nobody"]\n'
    (tmp_path / "config.toml").write_text(CHAINS.replace("[aliases.long]", typo + "[aliases.long]"))
    r = run_cli("config", "validate")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert "error: aliases.typo[1]: unknown provider 'opneai' (providers: lab, org); for a Hugging Face repo write " \
           "hf:opneai/gpt-4o" in lines
    assert any(line.startswith("error: aliases.typo[2]: unknown model 'nobody'") for line in lines)
    assert any(line.startswith("error: aliases.nested[0]: 'fast' is itself a chain") for line in lines)
    assert any(line.startswith("error: aliases.long.context_fallback: unknown provider 'nowhere'") for line in lines)
    assert any(line.startswith("error: providers.org: the name hides the registered model org/tiny") for line in lines)
    assert "warning: providers.lab.api_key: LAB_KEY is not set in this environment" in lines
    assert not any("aliases.fast" in line for line in lines)  # a remote target and a built-in alias: fine


def test_show_prints_references_never_values(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(CHAINS)
    env = {"LAB_KEY": KEY}
    shown = run_cli("config", "show", "--json", env=env)
    assert shown.returncode == 0 and KEY not in shown.stdout
    data = json.loads(shown.stdout)
    assert data["providers"]["lab"]["api_key"] == "${LAB_KEY}"
    assert data["aliases"]["fast"]["targets"] == ["lab/small", "smollm2"]
    plain = run_cli("config", "show", env=env)
    assert plain.returncode == 0 and KEY not in plain.stdout and "${LAB_KEY}" in plain.stdout


def test_a_secret_never_shows_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_KEY", KEY)
    (tmp_path / "config.toml").write_text(CHAINS)
    settings = load_settings()
    secret = settings.providers["lab"].api_key
    assert isinstance(secret, Secret) and secret.reveal() == KEY
    assert KEY not in repr(settings) + str(settings) + repr(secret) + f"{secret}"
    assert KEY not in settings.model_dump_json()
