"""A real `corral serve` process on 127.0.0.1 for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None, wait: bool = True,
                 config: str | None = None, register: dict[str, Path] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.log = home / "server.log"
        home.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (home / "config.toml").write_text(config)
        full_env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": str(home / "config.toml"),
                    "HF_HOME": str(home / "hf"), **(env or {})}
        for name, path in (register or {}).items():  # models registered before the server starts
            subprocess.run([sys.executable, "-m", "corral", "pull", str(path), "--name", name], env=full_env,
                           check=True, capture_output=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "corral", "serve", "--port", str(self.port), *args],
                                     env=full_env, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready: {self.log.read_text()}")

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)  # type: ignore[arg-type]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per module: smollm2 and minilm through their built-in aliases."""
    srv = Server(tmp_path_factory.mktemp("srv"), "--models", "smollm2,minilm", "--threads", "2")
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[type[Server]]:
    started: list[Server] = []

    class Factory(Server):
        def __init__(self, *args: str, env: dict[str, str] | None = None, wait: bool = True,
                     config: str | None = None, register: dict[str, Path] | None = None) -> None:
            super().__init__(tmp_path / f"home{len(started)}", *args, env=env, wait=wait, config=config,
                             register=register)
            started.append(self)

    yield Factory
    for s in started:
        s.stop(signal.SIGKILL)
