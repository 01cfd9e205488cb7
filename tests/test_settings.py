"""The one settings schema: precedence flags > environment > config file > defaults, errors that
name where a bad value came from, flags generated from the schema, the global --config flag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import run_cli

from corral.cli.main import build_parser
from corral.config import SECTIONS, load_settings
from corral.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "absent.toml")
    assert (s.server.host, s.server.port, s.runtime.max_loaded, s.runtime.keep_alive) == ("127.0.0.1", 8000, 3, 300.0)
    assert s.runtime.memory_budget is None and s.server.api_keys == []


def test_each_layer_wins_over_the_one_below(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "c.toml", '[server]\nport = 9001\n[runtime]\nmax_loaded = 5\nkeep_alive = "10m"\n'
                                        'memory_budget = "2GB"\nparallel = 2\n')
    s = load_settings(config)
    assert (s.server.port, s.runtime.max_loaded, s.runtime.keep_alive, s.runtime.memory_budget) == \
        (9001, 5, 600.0, 2_000_000_000)
    monkeypatch.setenv("CORRAL_PORT", "9002")
    monkeypatch.setenv("CORRAL_MAX_LOADED", "6")
    s = load_settings(config)
    assert (s.server.port, s.runtime.max_loaded, s.runtime.parallel) == (9002, 6, 2)  # the file's parallel stays
    s = load_settings(config, {"server": {"port": "9003"}})
    assert (s.server.port, s.runtime.max_loaded) == (9003, 6)


def test_list_settings_from_environment_and_repeated_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_API_KEYS", "k1, k2")
    assert load_settings(tmp_path / "none.toml").server.api_keys == ["k1", "k2"]
    s = load_settings(tmp_path / "none.toml", {"server": {"api_keys": ["a,b", "c"]}, "runtime": {"models": ["x"]}})
    assert s.server.api_keys == ["a", "b", "c"] and s.runtime.models == ["x"]


@pytest.mark.parametrize(("layer", "expected"), [
    ("file", "config file"), ("env", "environment variable CORRAL_MAX_QUEUE"), ("flag", "flag --max-queue")])
def test_a_bad_value_names_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layer: str,
                                      expected: str) -> None:
    config = write(tmp_path / "c.toml", "[runtime]\nmax_queue = -1\n" if layer == "file" else "")
    if layer == "env":
        monkeypatch.setenv("CORRAL_MAX_QUEUE", "lots")
    flags = {"runtime": {"max_queue": "-5"}} if layer == "flag" else None
    with pytest.raises(ConfigError) as err:
        load_settings(config, flags)
    assert err.value.message.startswith(expected) and "runtime.max_queue" in err.value.message


def test_unknown_keys_and_bad_toml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_settings(write(tmp_path / "a.toml", "[server]\nprot = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path / "b.toml", "[server\n"))


def test_serve_has_one_flag_per_setting_and_no_other_copy() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    dests = {a.dest for a in serve._actions}
    for section, model in SECTIONS.items():
        for name in model.model_fields:
            assert f"setting:{section}:{name}" in dests
    # the flags carry no defaults of their own: the schema's apply
    assert all(a.default is None for a in serve._actions if a.dest.startswith("setting:"))


def test_global_config_flag_beats_corral_config(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "[runtime]\nmax_loaded = 0\n")
    r = run_cli("--config", str(bad), "serve", "--port", "0")
    assert r.returncode == 2
    assert f"config file {bad}: runtime.max_loaded" in r.stderr and "Traceback" not in r.stderr
    # the environment beats the file
    r = run_cli("--config", str(bad), "list", env={"CORRAL_MAX_LOADED": "2"})
    assert r.returncode == 0, r.stderr


def test_threads_reach_the_engines_from_flags_environment_and_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.cli.context import Context, load_options
    from corral.cli.flags import setting_flags
    from corral.cli.main import build_parser
    from corral.runtime.runtime import RuntimeOptions

    parser = build_parser()
    monkeypatch.setenv("CORRAL_THREADS", "3")
    assert load_options(parser.parse_args(["run", "smollm2", "hi"]), Context()).threads == 3
    assert load_options(parser.parse_args(["run", "smollm2", "hi", "--threads", "2"]), Context()).threads == 2
    served = parser.parse_args(["serve", "--threads", "4"])  # serve's --threads is the [runtime] setting's flag
    ctx = Context(flags=setting_flags(served))
    assert RuntimeOptions.from_settings(ctx.settings, load_options(served, ctx)).load.threads == 4
    monkeypatch.setenv("CORRAL_THREADS", "0")
    with pytest.raises(ConfigError, match="threads"):
        load_settings()


def test_engines_default_to_the_cpus_the_process_may_use() -> None:
    pinned = subprocess.run([sys.executable, "-c", "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
                             "from corral.devices import usable_cpus; print(usable_cpus())"],
                            capture_output=True, text=True, timeout=60)
    assert pinned.returncode == 0 and pinned.stdout.strip() == "1", pinned.stderr
