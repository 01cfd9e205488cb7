"""The catalogue's row 18 (issue 18): download faults, through `corral pull` as a user runs it (a subprocess of
the real CLI, the real huggingface_hub client) against a stand-in hub on 127.0.0.1 (tests/hub_server.py). A body cut
off, bit-flipped, or longer or shorter than its announced length registers nothing and leaves nothing at the file's
final path; `kill -9` mid-download, then a rerun, lists the model once, whole and verified (a file the killed
process wrote but never checked is checked); three processes pulling at once fetch each file once; a download that
would eat into the free-space reserve is refused before the first byte (507 over HTTP); a redirect to another host
(the Hub's CDN) does not carry the token."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants as hf_constants
from tests.conftest import registered, run_cli
from tests.hub_server import FakeHub
from tests.server.test_fake_http import fake_runtime, run, serving

pytestmark = pytest.mark.timeout(180)
REPO = "org/tiny-llama"
WEIGHTS = "model.safetensors"
TOKEN = "hf_PLANTEDtoken0123456789abcdef"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.tiny_models import build_causal_lm

    return build_causal_lm("llama", tmp_path_factory.mktemp("llama")).path


@pytest.fixture
def hub(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The stand-in hub, named by HF_ENDPOINT for every `corral` started here; online, no token."""
    with FakeHub(model_dir, repo_id=REPO) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "60")  # a paused body is a pause, not a timeout
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield fake


def pull(**env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("pull", f"hf:{REPO}", "--quiet", env=env, timeout=120)


def start_pull(**env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "corral", "pull", f"hf:{REPO}", "--quiet"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})


def listed() -> list[dict[str, Any]]:
    out = run_cli("list", "--json")
    assert out.returncode == 0, out.stderr
    return registered(json.loads(out.stdout))


def storage() -> Path:
    return Path(os.environ["HF_HOME"]) / "hub" / "models--org--tiny-llama"


def leftovers() -> list[Path]:
    return list(Path(os.environ["HF_HOME"]).rglob("*.incomplete"))


def until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_verified_or_absent(hub: FakeHub) -> None:
    """Every file left in the snapshot is the hub's file, byte for byte; no temp file is left."""
    snapshot = storage() / "snapshots" / hub.commit
    for file in snapshot.rglob("*"):
        if file.is_file():
            assert file.read_bytes() == hub.files[file.relative_to(snapshot).as_posix()], file
    assert leftovers() == []


def assert_listed_once_and_whole(hub: FakeHub) -> None:
    rows = listed()
    assert [r["source"] for r in rows] == [f"hf:{REPO}"], rows
    snapshot = storage() / "snapshots" / hub.commit
    assert Path(rows[0]["path"]) == snapshot.resolve()
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()) == sorted(hub.files)
    assert_verified_or_absent(hub)


FAULTS: dict[str, tuple[Callable[[FakeHub], None], str]] = {
    "cut off": (lambda h: h.cut_file(WEIGHTS, after=1000, times=100), "was interrupted"),
    "bit-flipped": (lambda h: h.corrupt.add(WEIGHTS), "failed verification against the hub's checksum"),
    "longer than announced": (lambda h: h.lengths.__setitem__(WEIGHTS, len(h.files[WEIGHTS]) - 100),
                              "failed verification against the hub's checksum"),
    "shorter than announced": (lambda h: h.lengths.__setitem__(WEIGHTS, len(h.files[WEIGHTS]) + 100),
                               "was interrupted"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_bad_body_registers_nothing_and_leaves_nothing_at_its_path(hub: FakeHub, fault: str) -> None:
    inject, message = FAULTS[fault]
    inject(hub)
    failed = pull()
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], failed.stderr  # one clear line (huggingface_hub's retries above)
    assert listed() == []
    assert not os.path.lexists(storage() / "snapshots" / hub.commit / WEIGHTS)  # nothing at the final path
    assert hub.etag(WEIGHTS) not in {p.name for p in (storage() / "blobs").iterdir()}
    assert_verified_or_absent(hub)

    if fault.endswith("announced"):
        return  # the rerun after a failed body is shown by the two faults above
    hub.cut_file(WEIGHTS, after=0, times=0)
    hub.corrupt.clear()
    done = pull()
    assert done.returncode == 0, done.stderr
    assert_listed_once_and_whole(hub)


def test_kill_9_mid_download_then_a_rerun_lists_it_once_whole_and_checked(hub: FakeHub) -> None:
    hub.corrupt.add("config.json")  # lands corrupt, and the process dies before it checks it
    hub.stall_file(WEIGHTS, after=len(hub.files[WEIGHTS]) // 2)
    snapshot = storage() / "snapshots" / hub.commit
    proc = start_pull()
    try:
        until(lambda: hub.stalled.is_set() and all((snapshot / f).exists() for f in hub.files if f != WEIGHTS),
              "the other files to land and the weights to be half sent")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    hub.release.set()
    hub.corrupt.clear()
    assert listed() == [] and not os.path.lexists(snapshot / WEIGHTS)  # never a half model

    done = pull()
    assert done.returncode == 0, done.stderr
    assert_listed_once_and_whole(hub)  # the killed process's temp file is gone too
    gets = hub.gets_of(WEIGHTS)
    assert len(gets) == 2 and gets[-1].range in (None, "bytes=0-")  # huggingface_hub 2.4 restarts the file
    assert len(hub.gets_of("config.json")) == 2  # the unchecked file was checked, found corrupt, fetched again
    assert all(len(hub.gets_of(f)) == 1 for f in hub.files if f not in (WEIGHTS, "config.json"))  # reused


def _heads_of_a_solo_pull(model_dir: Path, tmp_path: Path) -> int:
    """HEADs of the weights one `corral pull` sends (into its own cache), so the race below knows when three
    pulls have all reached the weights."""
    with FakeHub(model_dir, repo_id=REPO) as solo:
        done = pull(HF_ENDPOINT=solo.endpoint, HF_HOME=str(tmp_path / "solo"), CORRAL_HOME=str(tmp_path / "s"))
        assert done.returncode == 0, done.stderr
        return sum(1 for r in solo.requests if r.method == "HEAD" and r.path.endswith("/" + WEIGHTS))


def test_three_processes_pulling_at_once_fetch_each_file_once(hub: FakeHub, model_dir: Path,
                                                              tmp_path: Path) -> None:
    heads = _heads_of_a_solo_pull(model_dir, tmp_path)
    hub.stall_file(WEIGHTS, after=1000)  # the first to fetch the weights pauses in the middle
    procs = [start_pull() for _ in range(3)]
    try:
        until(lambda: sum(1 for r in hub.requests if r.method == "HEAD" and r.path.endswith("/" + WEIGHTS))
              >= 3 * heads and hub.stalled.is_set(), "all three pulls to reach the weights")
        hub.release.set()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    for path in hub.files:  # huggingface_hub's per-blob file lock: one body each, never a Range retry
        assert len(hub.gets_of(path)) == 1, (path, hub.gets_of(path))
    assert_listed_once_and_whole(hub)


def test_a_download_that_would_eat_the_reserve_is_refused_before_the_first_byte(hub: FakeHub) -> None:
    home = Path(os.environ["HF_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    reserve = str(shutil.disk_usage(home).free + 2**30)  # just over what is free: no full disk needed
    refused = pull(CORRAL_DOWNLOAD_RESERVE=reserve)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "not enough disk space" in refused.stderr and "CORRAL_DOWNLOAD_RESERVE" in refused.stderr
    assert [r for r in hub.requests if "/resolve/" in r.path] == []  # not a HEAD, not a byte
    assert listed() == [] and leftovers() == [] and not (storage() / "blobs").exists()

    done = pull(CORRAL_DOWNLOAD_RESERVE="0")
    assert done.returncode == 0, done.stderr
    assert_listed_once_and_whole(hub)


def test_the_reserve_refusal_is_507_over_http(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(os.environ["HF_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("CORRAL_DOWNLOAD_RESERVE", str(shutil.disk_usage(home).free + 2**30))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # in this process, huggingface_hub's import-time copy
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))

    async def scenario() -> Any:
        async with serving(fake_runtime()) as (_, http):
            return await http.post("/api/pull", json={"model": f"hf:{REPO}", "stream": False})

    answer = run(scenario())
    assert answer.status_code == 507 and "not enough disk space" in answer.json()["error"], answer.text
    assert [r for r in hub.requests if "/resolve/" in r.path] == []


def test_a_redirect_to_another_host_does_not_carry_the_token(hub: FakeHub, model_dir: Path) -> None:
    with FakeHub(model_dir, repo_id=REPO, host="127.0.0.2") as cdn:  # another origin, as the Hub's CDN is
        hub.redirect_to = cdn.endpoint
        done = pull(HF_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert_listed_once_and_whole(hub)
    assert cdn.gets_of(WEIGHTS) and hub.gets_of(WEIGHTS) == []  # the weights came from the other host
    assert all(auth(r.headers) == f"Bearer {TOKEN}" for r in hub.requests)  # the hub had it on every request
    assert [r.headers for r in cdn.requests if auth(r.headers) is not None or TOKEN in str(r.headers)] == []


def auth(headers: dict[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)
