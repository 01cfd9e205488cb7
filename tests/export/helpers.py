"""Exports for the tests: `corral export` run as a user runs it, and the exported serve.py started
as a real server on 127.0.0.1 (a free port it picks and prints)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tests.conftest import run_cli

K = TypeVar("K")


def export(model: str, out: Path, *flags: str) -> dict[str, Any]:
    done = run_cli("export", model, "-o", str(out), "--json", *flags)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH (so no corral), offline."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def selftest(folder: Path, python: str | Path = sys.executable, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "serve.py", "--selftest", *flags], cwd=folder, capture_output=True,
                          text=True, env=clean_env(), timeout=600)


class Exported:
    """serve.py of an export running on a free loopback port."""

    def __init__(self, folder: Path, python: str | Path = sys.executable, *flags: str) -> None:
        self.log = folder.parent / f"{folder.name}-serve.log"
        self.proc = subprocess.Popen([str(python), "serve.py", "--port", "0", *flags], cwd=folder,
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env=clean_env())
        self.url = self._wait()

    def _wait(self, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", self.log.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.py exited with {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.1)
        raise RuntimeError(f"serve.py did not start: {self.log.read_text()}")

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=300, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Exported:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_files(folder: Path) -> None:
    """What every export must pass without running a model: the Python compiles, the requirements
    resolve on the package index to exactly the pinned versions (pip --dry-run), and every Dockerfile
    passes hadolint and the rules in dockerfile.py."""
    from tests.export.dockerfile import hadolint, problems

    requirements = "\n".join(line for line in (folder / "requirements.txt").read_text().splitlines()
                             if line and not line.startswith("#"))  # the pins, not the header naming the model

    for script in ("serve.py", "fetch_model.py"):
        if (folder / script).exists():
            compiled = subprocess.run([sys.executable, "-m", "py_compile", str(folder / script)], capture_output=True,
                                      text=True)
            assert compiled.returncode == 0, compiled.stderr
    if requirements not in RESOLVED:  # the same pins resolve the same way: once per test process
        resolves(folder)
        RESOLVED.add(requirements)
    for dockerfile in folder.glob("Dockerfile*"):
        linted = hadolint(dockerfile)
        assert linted.returncode == 0, f"{dockerfile.name}: {linted.stdout}{linted.stderr}"
        assert problems(dockerfile.read_text()) == [], dockerfile.name


RESOLVED: set[str] = set()
# What pip prints when the index's answer was cut off or the connection dropped (seen in CI: a JSON page
# truncated at 6 MB); a resolution that really fails prints none of these.
INDEX_HICCUPS = ("JSONDecodeError", "ReadTimeoutError", "ProtocolError", "IncompleteRead", "Connection reset")


def resolves(folder: Path) -> None:
    """``pip install --dry-run`` of requirements.txt against the package index picks exactly the pins."""
    report = folder.parent / f"{folder.name}-pip-report.json"
    for _ in range(3):  # a page the index cut short is the network's fault, not the pins': ask again
        resolved = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                                   "--disable-pip-version-check", "--report", str(report), "-r",
                                   str(folder / "requirements.txt")], capture_output=True, text=True, timeout=600)
        if resolved.returncode == 0 or not any(sign in resolved.stderr for sign in INDEX_HICCUPS):
            break
    assert resolved.returncode == 0, resolved.stderr[-2000:]
    got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"].split("+")[0]
           for i in json.loads(report.read_text())["install"]}
    for line in (folder / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert got.get(name.lower().replace("_", "-")) == version, f"{line} resolved to {got.get(name.lower())}"


def start_servers(folders: Mapping[K, Path], *flags: str) -> dict[K, Exported]:
    """Each export's server, started side by side; all stopped if one fails to start."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, len(folders))) as pool:
        starting = {key: pool.submit(Exported, folder, sys.executable, *flags) for key, folder in folders.items()}
    servers, failed = {}, []
    for key, future in starting.items():
        try:
            servers[key] = future.result()
        except RuntimeError as exc:
            failed.append(f"{key}: {exc}")
    if failed:
        for server in servers.values():
            server.stop()
        raise RuntimeError("; ".join(failed))
    return servers


def warm_servers(folders: Mapping[K, Path]) -> tuple[dict[K, Exported], dict[K, subprocess.CompletedProcess[str]]]:
    """Each export's server started with ``--warmup`` (the selftest's input run through the loaded model
    before it serves: the code ``--selftest`` runs, in one process instead of two), and each selftest's
    outcome read from its log ("selftest ok ..." on stderr)."""
    servers = start_servers(folders, "--warmup")
    done = {}
    for key, server in servers.items():
        log = server.log.read_text()
        line = next((x for x in log.splitlines() if x.startswith("selftest ok")), "")
        done[key] = subprocess.CompletedProcess(server.proc.args, 0 if line else 1, line, log)
    return servers, done


@dataclass
class Export:
    """One model's export, running: what `corral export --json` said, its selftest, its server, and (where a
    test gathers them first) corral's own answers to the requests the test sends."""

    name: str
    model: Path  # the model's folder
    out: Path  # the export
    result: dict[str, Any]  # `corral export --json`
    selftest: subprocess.CompletedProcess[str]
    server: Exported
    corral: dict[str, Any] = field(default_factory=dict)  # corral's answers, by request

    def post(self, body: Any = None, *, route: str | None = None, content: bytes | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        with self.server.client() as http:
            return http.post(route or f"/models/{self.name}", json=body, content=content, headers=headers)
