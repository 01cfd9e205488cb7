"""The catalogue's row 17 (issue 18): SIGTERM with streams in flight, on a real ``corral serve``
process serving SmolLM2. At once: not ready, new requests 503; the streams in flight finish within
the grace period (``--grace``), or are cut off at its end and logged; then exit 0 with no child
process left. A second SIGTERM while draining stops the server at once. (The plain drain, a stream
finishing whole, is also in tests/server/test_runtime.py.)"""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from tests.server.conftest import Server
from tests.server.test_runtime import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
CHAT = "/v1/chat/completions"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[type[Server]]:
    """``corral serve`` processes in the test's folder, killed at the end if still running."""
    started: list[Server] = []

    class Started(Server):
        def __init__(self, *args: str) -> None:
            super().__init__(tmp_path / f"home{len(started)}", *args)
            started.append(self)

    yield Started
    for srv in started:
        srv.stop(signal.SIGKILL)


def stream_in_background(srv: Server, max_tokens: int) -> tuple[threading.Thread, list[str]]:
    lines: list[str] = []
    # counting on: the model has no reason to stop before max_tokens (a story may end early)
    body = {"model": "smollm2", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": max_tokens,
            "temperature": 0, "stream": True}

    def read() -> None:
        try:
            with httpx.stream("POST", f"{srv.url}/v1/completions", json=body, timeout=120) as answer:
                lines.extend(line for line in answer.iter_lines() if line)
        except httpx.HTTPError as exc:
            lines.append(f"broken: {type(exc).__name__}")

    worker = threading.Thread(target=read)
    worker.start()
    return worker, lines


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_sigterm_drains_then_exits_0_and_a_stream_past_the_grace_period_is_cut_and_logged(
        servers: type[Server]) -> None:
    srv = servers("--models", "smollm2", "--threads", "2", "--grace", "2")
    children = descendants(srv.proc.pid)
    worker, lines = stream_in_background(srv, 1500)  # ~10 s of counting at best: far longer than the 2 s grace
    assert wait_for(lambda: sum(line.startswith("data: {") for line in lines) >= 3)
    srv.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: httpx.get(f"{srv.url}/ready", timeout=5).status_code == 503)
    refused = httpx.post(f"{srv.url}{CHAT}", timeout=30, json={"model": "smollm2", "max_tokens": 2,
                                                               "messages": [{"role": "user", "content": "Hi"}]})
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"]
    assert srv.proc.wait(60) == 0
    worker.join(60)
    assert lines and lines[-1] != "data: [DONE]"  # cut off at the end of the grace period, not finished
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    with sqlite3.connect(srv.home / "requests.db") as db:  # the log's queue was flushed on the way out
        statuses = [row[0] for row in db.execute("select status from requests where route = '/v1/completions'")]
    assert statuses == [499]  # the stream cut off at the end of the grace period (the 503 never reached a model)


def test_a_second_sigterm_while_draining_stops_at_once(servers: type[Server]) -> None:
    srv = servers("--models", "smollm2", "--threads", "2", "--grace", "600")
    worker, lines = stream_in_background(srv, 1500)
    assert wait_for(lambda: sum(line.startswith("data: {") for line in lines) >= 3)
    srv.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: httpx.get(f"{srv.url}/ready", timeout=5).status_code == 503)
    still_draining = srv.proc.poll() is None
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(60)  # far less than the 600 s grace: the second signal did not wait for the stream
    worker.join(60)
    assert still_draining and code == 0
    assert lines[-1] != "data: [DONE]"
