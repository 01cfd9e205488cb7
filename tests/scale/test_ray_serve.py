"""`corral serve --ray` for real: the CLI starts a local Ray head (2 CPUs, no dashboard) and 3
replicas of the packaged SmolLM2 (0.5 CPU each, preloaded) behind Serve's HTTP proxy on 127.0.0.1,
with an API key. Real clients (httpx, openai) hit it; `corral ray status` reads it; a replica is
killed and replaced; SIGTERM leaves no process of the cluster behind.

One cluster for the module (its tests run in file order on one worker): starting it costs about
10-20 s on 2 cores."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.server.conftest import free_port

KEY = "ray-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def ray_tmpdir() -> str:
    """Ray's sockets live under its temp folder: a short path (AF_UNIX), and one of the test's own so
    that address auto (`corral ray status`, `--ray-address auto`) finds the test's cluster and no other."""
    return tempfile.mkdtemp(prefix="cr", dir="/tmp")


class RayServer:
    def __init__(self, home: Path, *args: str, ray_tmp: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "serve.log"
        home.mkdir(parents=True, exist_ok=True)
        self.ray_tmp = ray_tmp or ray_tmpdir()
        self.env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": str(home / "config.toml"),
                    "HF_HOME": str(home / "hf"), "RAY_TMPDIR": self.ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "corral", "serve", "--ray", "--port", str(self.port),
                                      *args], env=self.env, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        self.processes: list[psutil.Process] = []

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"corral serve --ray exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    # every process of the cluster descends from corral serve (local head)
                    self.processes = psutil.Process(self.proc.pid).children(recursive=True)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"not ready: {self.log.read_text()}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "corral", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def status(self) -> dict[str, Any]:
        done = self.cli("ray", "status", "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            for p in self.processes:  # only if the test failed: never leave a cluster running
                if p.is_running():
                    p.kill()


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServer]:
    server = RayServer(tmp_path_factory.mktemp("ray"), "--models", "smollm2", "--replicas", "3",
                       "--replica-cpus", "0.5", "--threads", "1", "--parallel", "2", "--api-key", KEY)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def chat(url: str, text: str, *, max_tokens: int = 4) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=120,
                      json={"model": "smollm2", "messages": [{"role": "user", "content": text}],
                            "max_tokens": max_tokens})


def test_requests_spread_over_the_replicas(ray_server: RayServer) -> None:
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda i: chat(ray_server.url, f"say {i}"), range(30)))
    assert [r.status_code for r in responses] == [200] * 30
    assert all(r.json()["choices"][0]["message"]["content"] for r in responses)
    served = Counter(r.headers["x-corral-replica"] for r in responses)
    assert len(served) > 1, served
    ids = {row["replica"] for row in ray_server.status()["replicas"]}
    assert set(served) <= ids  # the header names replicas the registry knows


def test_streaming_through_the_proxy(ray_server: RayServer) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{ray_server.url}/v1", api_key=KEY)
    stream = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Count to five"}],
                                            max_tokens=24, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with httpx.stream("POST", f"{ray_server.url}/v1/completions", headers=AUTH, timeout=120,
                      json={"model": "smollm2", "prompt": "Once upon", "max_tokens": 8, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-corral-replica"]
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert len(events) > 2 and events[-1] == "data: [DONE]"


def test_every_door_of_corral_serve_is_there(ray_server: RayServer) -> None:
    with httpx.Client(base_url=ray_server.url, timeout=120) as client:
        assert client.get("/v1/models").status_code == 401  # the key is checked in every replica
        models = client.get("/v1/models", headers=AUTH)
        assert models.status_code == 200 and "smollm2" in {m["id"] for m in models.json()["data"]}
        hf = client.post("/models/smollm2/pipeline/feature-extraction", headers=AUTH, json={"inputs": "Hello"})
        assert hf.status_code == 200 and len(hf.json()) > 100 and isinstance(hf.json()[0], float)
        ps = client.get("/api/ps", headers=AUTH)
        assert ps.status_code == 200 and [m["name"] for m in ps.json()["models"]] == ["smollm2"]
        bad = client.post("/v1/chat/completions", headers=AUTH, json={"model": "nosuch", "messages": []})
        assert bad.status_code in (400, 404) and bad.json()["error"]["message"]
        for response in (models, hf, ps, bad):
            assert response.headers["x-corral-replica"]


def test_status_shows_replicas_models_and_memory(ray_server: RayServer) -> None:
    report = ray_server.status()
    deployment = report["application"]["deployments"]["corral"]
    assert report["application"]["status"] == "RUNNING"
    assert deployment["replicas"] == {"RUNNING": 3}
    rows = report["replicas"]
    assert len(rows) == 3 and len({r["pid"] for r in rows}) == 3
    for row in rows:  # preloaded on every replica
        assert [m["name"] for m in row["models"]] == ["smollm2"]
        assert row["rss_bytes"] > 50_000_000 and row["models"][0]["memory"]["measured_bytes"] > 0
    table = ray_server.cli("ray", "status")
    assert table.returncode == 0 and "3 RUNNING" in table.stdout and table.stdout.count("smollm2") == 3


def test_a_model_not_preloaded_loads_on_the_replica_that_serves_it(ray_server: RayServer) -> None:
    r = httpx.post(f"{ray_server.url}/v1/embeddings", headers=AUTH, timeout=120,
                   json={"model": "minilm", "input": ["a sentence"]})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
    served = r.headers["x-corral-replica"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the registry hears from each replica every 2 s
        loaded = {row["replica"]: {m["name"] for m in row["models"]} for row in ray_server.status()["replicas"]}
        if "minilm" in loaded.get(served, set()):
            break
        time.sleep(1)
    assert loaded[served] == {"smollm2", "minilm"}
    assert all(models == {"smollm2"} for replica, models in loaded.items() if replica != served)


def test_a_killed_replica_is_replaced(ray_server: RayServer) -> None:
    victim = ray_server.status()["replicas"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    waiting = None
    deadline = time.monotonic() + 60
    while waiting is None and time.monotonic() < deadline:  # reloading the model takes seconds: /ready says so
        ready = httpx.get(f"{ray_server.url}/ready", timeout=30)
        waiting = ready.json().get("waiting_for") if ready.status_code == 503 else None
        time.sleep(0.1)
    assert waiting is not None and ("deployment corral" in waiting or "application" in waiting), waiting
    deadline = time.monotonic() + 120
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        report = ray_server.status()
        rows = report["replicas"]
        if (report["application"]["deployments"]["corral"]["replicas"] == {"RUNNING": 3} and len(rows) == 3
                and victim["replica"] not in {r["replica"] for r in rows}):
            break
        time.sleep(1)
    assert victim["replica"] not in {r["replica"] for r in rows} and len(rows) == 3, rows
    assert httpx.get(f"{ray_server.url}/ready", timeout=30).status_code == 200
    with ThreadPoolExecutor(4) as pool:
        after = list(pool.map(lambda i: chat(ray_server.url, f"again {i}"), range(12)))
    assert [r.status_code for r in after] == [200] * 12
    assert victim["replica"] not in {r.headers["x-corral-replica"] for r in after}


def test_stop_finishes_the_stream_and_leaves_no_ray_process(ray_server: RayServer) -> None:
    processes = ray_server.processes
    assert any("raylet" in p.name() for p in processes) and len(processes) > 5
    with httpx.stream("POST", f"{ray_server.url}/v1/chat/completions", headers=AUTH, timeout=120,
                      json={"model": "smollm2", "messages": [{"role": "user", "content": "Tell a long story"}],
                            "max_tokens": 48, "stream": True}) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        ray_server.proc.send_signal(signal.SIGTERM)  # mid-stream
        rest = [line for line in lines if line.startswith("data: ")]
    assert json.loads(first.removeprefix("data: "))["object"] == "chat.completion.chunk"
    assert rest[-1] == "data: [DONE]"  # the replica finished what it was serving
    assert ray_server.proc.wait(120) == 0
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert alive == [], [(p.pid, p.name()) for p in alive]


def test_a_replica_that_cannot_start_fails_the_command_cleanly(tmp_path: Path, smollm2_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": str(tmp_path / "config.toml")}
    unknown = subprocess.run([sys.executable, "-m", "corral", "serve", "--ray", "--models", "nosuch"], env=env,
                             capture_output=True, text=True, timeout=120)
    # checked before Ray starts
    assert unknown.returncode != 0 and "no model, alias or file named 'nosuch'" in unknown.stderr
    broken = tmp_path / "broken.gguf"  # registered, then truncated: only the replica's load finds out
    broken.write_bytes(smollm2_path.read_bytes())
    subprocess.run([sys.executable, "-m", "corral", "pull", str(broken), "--name", "broken"], env=env, check=True,
                   capture_output=True)
    broken.write_bytes(broken.read_bytes()[:4096])
    server = RayServer(home, "--models", "broken", "--replica-cpus", "0.5")
    seen: set[psutil.Process] = set()
    while server.proc.poll() is None:  # every process the command started, while it runs
        with contextlib.suppress(psutil.NoSuchProcess):
            seen.update(psutil.Process(server.proc.pid).children(recursive=True))
        time.sleep(0.2)
    assert server.proc.returncode == 1
    log = server.log.read_text()
    assert "error: the replicas did not start" in log and "broken" in log
    _, alive = psutil.wait_procs(list(seen), timeout=30)
    assert len(seen) > 3 and alive == []


def test_joins_an_existing_cluster_and_leaves_it_running(tmp_path: Path) -> None:
    ray_tmp = ray_tmpdir()
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    head_log = tmp_path / "head.log"
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port",
                             str(free_port()), "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=head_log.open("w"), stderr=subprocess.STDOUT)
    cluster: list[psutil.Process] = []
    server: RayServer | None = None
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in head_log.read_text() and time.monotonic() < deadline:
            assert head.poll() is None, head_log.read_text()
            time.sleep(0.5)
        server = RayServer(tmp_path / "home", "--ray-address", "auto", "--replicas", "2", "--replica-cpus", "0.5",
                           ray_tmp=ray_tmp)
        server.wait_ready()
        r = httpx.post(f"{server.url}/v1/embeddings", timeout=120, json={"model": "minilm", "input": "joined"})
        assert r.status_code == 200 and r.headers["x-corral-replica"]
        cluster = psutil.Process(head.pid).children(recursive=True)
        names = " ".join(p.name() for p in cluster)
        assert "ServeReplica" in names and "ServeController" in names  # the replicas run in the joined cluster
        assert len(server.status()["replicas"]) == 2
        assert server.stop() == 0
        after = server.status()  # the cluster is still there to ask
        assert after["application"] is None and after["replicas"] == []
        assert head.poll() is None
        left = " ".join(p.name() for p in psutil.Process(head.pid).children(recursive=True))
        assert "ServeReplica" not in left and "ServeController" not in left and "Registry" not in left
    finally:
        if server is not None:
            server.stop()  # at once when the test has stopped it already
        cluster = [*cluster, *psutil.Process(head.pid).children(recursive=True)] if head.poll() is None else cluster
        head.send_signal(signal.SIGINT)  # `ray start --block` stops its cluster on Ctrl-C
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        _, alive = psutil.wait_procs(cluster, timeout=30)
        for p in alive:
            p.kill()
    assert alive == []
