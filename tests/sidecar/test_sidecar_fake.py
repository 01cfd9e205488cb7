"""The sidecar as a real subprocess over the fake engine (tests/sidecar_fake.py runs corral's own
sidecar loop with the fake engine's row in the table): bad input of every kind answered and the
session going on, cancellation, end of input and shutdown with work in flight, a chatty backend
writing to fd 1, the request log through ``logs`` and ``usage``, and no orphan when the parent dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fake_engine import register_fake

from corral.config import load_settings
from corral.models.store import Store
from corral.sidecar.client import Call, SidecarClient, SidecarError
from corral.sidecar.protocol import (
    CORRAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REQUEST_CANCELLED,
)

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "one two three four five six"}]


def fake_sidecar(*args: str, stderr: Any = None) -> SidecarClient:
    path = os.pathsep.join([str(ROOT), os.environ["PYTHONPATH"]])
    return SidecarClient(command=[sys.executable, "-m", "tests.sidecar_fake", *args], env={"PYTHONPATH": path},
                         stderr=stderr)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    store = Store(load_settings().manifest_path)
    register_fake(store, tmp_path / "fake", "echo", tasks=("chat", "complete", "embed"), parallel=4)
    register_fake(store, tmp_path / "fake", "noisy", noisy=True)
    register_fake(store, tmp_path / "fake", "slow", delay=0.02, repeat=True)
    register_fake(store, tmp_path / "fake", "held", hold=True)
    return tmp_path


@pytest.fixture
def sidecar(models: Path) -> Iterator[SidecarClient]:
    client = fake_sidecar()
    yield client
    client.close()


def error_of(call: Call) -> SidecarError:
    with pytest.raises(SidecarError) as caught:
        call.result(timeout=60)
    return caught.value


def replies_to(client: SidecarClient, rid: Any, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in list(client.messages) if "method" not in m and m.get("id") == rid]
        if found:
            return found
        time.sleep(0.02)
    return []


def healthy(client: SidecarClient) -> None:
    """The session still answers a good request."""
    got = client.call("chat", {"model": "echo", "messages": HELLO, "max_tokens": 3}, timeout=60)
    assert got["choices"][0]["message"]["content"] == "one two three"


def test_every_bad_input_is_answered_and_the_session_goes_on(sidecar: SidecarClient) -> None:
    cases: list[tuple[bytes, Any, int]] = [
        (b"this is not json", None, PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "id": 901', None, PARSE_ERROR),
        (b"[]", None, INVALID_REQUEST),
        (b'{"id": 902, "method": "chat"}', 902, INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 903, "method": "no/such/method"}', 903, METHOD_NOT_FOUND),
        (b'{"jsonrpc": "2.0", "id": 904, "method": "chat", "params": [1, 2]}', 904, INVALID_PARAMS),
    ]
    for line, rid, code in cases:
        before = len(sidecar.messages)
        sidecar.send_line(line)
        healthy(sidecar)
        answers = [m for m in sidecar.messages[before:] if "error" in m and m["id"] == rid]
        assert [a["error"]["code"] for a in answers] == [code], line
    # bad params name the field; corral's errors carry their message, type, hint and status
    err = error_of(sidecar.start("chat", {"model": "echo", "messages": HELLO, "temperature": 9}))
    assert err.code == INVALID_PARAMS and err.data == {"param": "temperature"}
    err = error_of(sidecar.start("embed", {"model": "echo"}))
    assert err.code == INVALID_PARAMS and err.data == {"param": "input"}
    err = error_of(sidecar.start("chat", {"model": "nope", "messages": HELLO}))
    assert err.code == CORRAL_ERROR and err.data["type"] == "ModelNotFoundError" and err.data["status"] == 404
    assert "models/list" in err.data["hint"]
    err = error_of(sidecar.start("chat", {"model": "../../etc/passwd", "messages": HELLO}))
    assert err.code == CORRAL_ERROR and err.data["status"] in (400, 404)
    err = error_of(sidecar.start("models/load", {"model": "../x"}))
    assert err.code == CORRAL_ERROR and err.data["type"] == "BadReferenceError"
    healthy(sidecar)
    assert sidecar.bad_lines == []


def test_an_over_long_line_is_refused_and_the_session_goes_on(models: Path) -> None:
    with fake_sidecar("--max-line-bytes", "2048") as client:
        params = {"model": "echo", "input": "x" * 5000}
        big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "embed", "params": params})
        client.send_line(big.encode())
        healthy(client)
        refused = [m for m in client.messages if "error" in m and m["id"] is None]
        assert len(refused) == 1 and refused[0]["error"]["code"] == INVALID_REQUEST
        assert refused[0]["error"]["data"] == {"limit": 2048}
        assert "longer than the limit" in refused[0]["error"]["message"]


def test_concurrent_requests_interleave_and_an_id_in_use_is_refused(sidecar: SidecarClient) -> None:
    running = sidecar.stream("chat", {"model": "slow", "messages": HELLO, "max_tokens": 400})
    first = next(running.deltas(timeout=30))  # the role
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # while it runs, other requests are answered
    healthy(sidecar)
    assert sidecar.call("embed", {"model": "echo", "input": ["a", "b c"]})["usage"]["prompt_tokens"] == 3
    sidecar.send_line(json.dumps({"jsonrpc": "2.0", "id": running.id, "method": "models/status"}).encode())
    refused = replies_to(sidecar, running.id)
    assert [m["error"]["code"] for m in refused] == [INVALID_REQUEST]
    assert "already in use" in refused[0]["error"]["message"]
    # (the client took that answer for the running call's; the request itself is still running)
    running.cancel()
    deadline = time.monotonic() + 30
    while len(replies_to(sidecar, running.id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [m["error"]["code"] for m in replies_to(sidecar, running.id)] == [INVALID_REQUEST, REQUEST_CANCELLED]


def test_cancel_stops_the_generation_and_logs_499(sidecar: SidecarClient) -> None:
    call = sidecar.stream("chat", {"model": "slow", "messages": HELLO, "max_tokens": 400})
    deltas = call.deltas(timeout=30)
    assert next(deltas)["choices"][0]["delta"]["role"] == "assistant"
    assert next(deltas)["choices"][0]["delta"] == {"content": "one"}
    call.cancel()
    with pytest.raises(SidecarError) as caught:
        list(deltas)
    assert caught.value.code == REQUEST_CANCELLED and caught.value.message == "request cancelled"
    assert len(replies_to(sidecar, call.id)) == 1  # exactly one answer
    sidecar.notify("notifications/cancelled", {"requestId": call.id})  # finished: ignored
    sidecar.notify("notifications/cancelled", {"requestId": 424242})  # unknown: ignored
    healthy(sidecar)
    rows = sidecar.call("logs", {"limit": 10})["requests"]
    cancelled = [r for r in rows if r["model"] == "slow"]
    assert len(cancelled) == 1
    assert cancelled[0]["status"] == 499 and cancelled[0]["door"] == "sidecar" and cancelled[0]["task"] == "chat"
    assert 1 <= cancelled[0]["completion_tokens"] < 400
    status = sidecar.call("models/status")
    assert {m["name"]: m["in_flight"] for m in status["models"]}["slow"] == 0  # its slot is free


def test_usage_counts_calls_per_model_and_door(sidecar: SidecarClient) -> None:
    since = time.time() - 1
    healthy(sidecar)
    healthy(sidecar)
    sidecar.call("embed", {"model": "echo", "input": "a b"})
    rows = {(r["model"], r["door"]): r for r in sidecar.call("usage", {"since": since})["usage"]}
    echo = rows[("echo", "sidecar")]
    assert echo["requests"] == 3 and echo["errors"] == 0
    assert echo["completion_tokens"] == 6 and echo["prompt_tokens"] == 2 * 6 + 2
    assert sidecar.call("usage", {"since": time.time() + 60})["usage"] == []


def test_backend_writes_to_fd1_never_reach_the_protocol(models: Path, tmp_path: Path) -> None:
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err, fake_sidecar(stderr=err) as client:
        call = client.stream("chat", {"model": "noisy", "messages": HELLO, "max_tokens": 4})
        text = "".join(d["choices"][0]["delta"].get("content", "") for d in call.deltas(timeout=60) if d["choices"])
        assert text == "one two three four" and call.final["choices"][0]["message"]["content"] == text
        healthy(client)
    assert client.bad_lines == []  # every stdout line parsed
    noise = err_path.read_text()
    assert "noise from the engine, token 3" in noise and noise.count('{"partial": "raw write') == 4


def test_end_of_input_with_work_in_flight_exits_0(models: Path) -> None:
    client = fake_sidecar()
    call = client.stream("chat", {"model": "slow", "messages": HELLO, "max_tokens": 400})
    next(call.deltas(timeout=30))
    assert client.proc.stdin is not None
    client.proc.stdin.close()
    assert client.proc.wait(60) == 0
    rows = [r for r in _log_rows() if r["model"] == "slow"]
    assert [r["status"] for r in rows] == [499]


def test_shutdown_cancels_in_flight_then_answers_and_exits_0(models: Path) -> None:
    client = fake_sidecar()
    call = client.stream("chat", {"model": "slow", "messages": HELLO, "max_tokens": 400})
    next(call.deltas(timeout=30))
    shutdown = client.start("shutdown")
    assert shutdown.result(timeout=60) == {}
    assert error_of(call).code == REQUEST_CANCELLED
    answers = [m["id"] for m in client.messages if "method" not in m]
    assert answers.index(call.id) < answers.index(shutdown.id)  # in-flight work ended first
    assert client.proc.wait(60) == 0
    client.close()


def _log_rows() -> list[dict[str, Any]]:
    from corral.runtime.requestlog import latest

    return latest(load_settings().data_dir / "requests.db", 50)


PARENT = """
import sys, time
from corral.sidecar.client import SidecarClient
client = SidecarClient(command=sys.argv[1:])
client.call("initialize")
print(client.proc.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # exited; waiting for init to reap it


def test_killing_the_parent_leaves_no_sidecar(models: Path) -> None:
    path = os.pathsep.join([str(ROOT), os.environ["PYTHONPATH"]])
    parent = subprocess.Popen([sys.executable, "-c", PARENT, sys.executable, "-m", "tests.sidecar_fake"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": path})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert not _gone(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)
    deadline = time.monotonic() + 60
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), f"sidecar {child} outlived its parent"


def test_requests_from_a_file_are_all_answered(models: Path, tmp_path: Path) -> None:
    """stdin and stdout as files (not pipes): the threaded reader and writer; a file is a batch, so its
    end waits for every answer instead of cancelling."""
    lines = [json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize"}), "not json",
             json.dumps({"jsonrpc": "2.0", "id": 2, "method": "chat", "params": {"model": "echo", "messages": HELLO,
                                                                                   "max_tokens": 2}}),
             json.dumps({"jsonrpc": "2.0", "id": 3, "method": "embed", "params": {"model": "echo", "input": "a"}})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines))  # no newline after the last line
    path = os.pathsep.join([str(ROOT), os.environ["PYTHONPATH"]])
    with (tmp_path / "in.jsonl").open("rb") as stdin, (tmp_path / "out.jsonl").open("wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "tests.sidecar_fake"], stdin=stdin, stdout=stdout,
                              env={**os.environ, "PYTHONPATH": path}, timeout=60)
    assert done.returncode == 0
    answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    by_id = {a["id"]: a for a in answers}
    assert by_id[None]["error"]["code"] == PARSE_ERROR
    assert by_id[1]["result"]["serverInfo"]["name"] == "corral"
    assert by_id[2]["result"]["choices"][0]["message"]["content"] == "one two"
    assert by_id[3]["result"]["usage"]["prompt_tokens"] == 1 and len(answers) == 4


def test_sigterm_ends_the_session_and_a_second_one_exits_at_once(models: Path) -> None:
    client = fake_sidecar()
    call = client.stream("chat", {"model": "slow", "messages": HELLO, "max_tokens": 400})
    next(call.deltas(timeout=30))
    client.proc.send_signal(signal.SIGTERM)
    assert client.proc.wait(60) == 0  # like end of input: the stream cancelled, models unloaded
    assert error_of(call).code == REQUEST_CANCELLED
    stuck = fake_sidecar()  # a generation held inside the engine: the graceful end waits for it (10 s at most)
    held = stuck.stream("chat", {"model": "held", "messages": HELLO, "max_tokens": 5})
    next(held.deltas(timeout=30))
    stuck.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # two pending SIGTERMs would merge into one: let the first be taken
    stuck.proc.send_signal(signal.SIGTERM)
    assert stuck.proc.wait(60) == 128 + signal.SIGTERM  # the second signal: out at once, not 0 after the wait
