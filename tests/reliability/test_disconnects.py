"""The catalogue's row 13 (issue 18): clients that leave.

A client that leaves after its first chunk, or while its request still waits in the model's queue,
frees its place: the engine never starts a generation for a request whose client has gone, the
next request in line is served next (checked by the order of the engine's generations, not by
timing), and each leaver is logged 499. (Leaving mid-stream stopping the engine at once is in
tests/server/test_fake_http.py.) A slow reader that never drains its socket holds no more than the
answer it asked for: a real uvicorn server, a raw socket that reads nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.fake_engine import loaded_fake
from tests.server.conftest import free_port
from tests.server.test_fake_http import CHAT, HOST, chat_body, fake_runtime, register, run, serving, until

from corral.api.app import ServeOptions, create_app
from corral.api.guard import ServerState
from corral.runtime.requestlog import latest

pytestmark = pytest.mark.timeout(60)


class RawCall:
    """One POST over raw ASGI as uvicorn makes it (disconnects arrive through receive); the test
    decides when the client leaves."""

    def __init__(self, app: Any, path: str, body: dict[str, Any], port: int) -> None:
        self.gone, self.sent = asyncio.Event(), list[dict[str, Any]]()
        self.pending = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "headers": [(b"host", HOST.encode()), (b"content-type", b"application/json")],
                 "client": (HOST, port), "server": (HOST, 8000)}
        self.task = asyncio.ensure_future(app(scope, self.receive, self.send))

    async def receive(self) -> dict[str, Any]:
        if self.pending:
            return self.pending.pop()
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent)

    async def leave(self) -> None:
        self.gone.set()
        await self.task


def prompts_generated(rt: Any) -> list[int]:
    return [g.prompt_tokens for g in loaded_fake(rt, "echo").generations]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_leavers_free_their_places_and_the_next_request_is_served_next(
        tmp_path: Path, corral_home: Path, stream: bool) -> None:
    register(tmp_path, "echo", hold=True, repeat=True, context=20_000)  # token 2 on waits for the release

    async def scenario() -> tuple[list[int], bytes, dict[str, Any]]:
        rt = fake_runtime()
        async with serving(rt) as (app, http):
            gate: Callable[[], Any] = lambda: rt.registry.models["echo"].serving.gate  # noqa: E731
            first = RawCall(app, CHAT, chat_body("a", stream=True, max_tokens=50), 1001)
            await until(lambda: "echo" in rt.registry.models and bool(prompts_generated(rt)))
            queued = RawCall(app, CHAT, chat_body("b b", stream=stream, max_tokens=50), 1002)
            await until(lambda: gate().waiting == 1)
            last = asyncio.ensure_future(http.post(CHAT, json=chat_body("c c c", max_tokens=2)))
            await until(lambda: gate().waiting == 2)
            await queued.leave()  # gone while queued: its place is free before it ever ran
            waiting_after_leave = gate().waiting
            await first.leave()  # gone after its first chunk: the engine stops, the slot is free
            loaded_fake(rt, "echo").release.set()
            answer = await last
            return [waiting_after_leave, *prompts_generated(rt)], queued.body(), answer.json()

    order, queued_body, answer = run(scenario())
    assert order == [1, 1, 3]  # one left waiting; generations: the first request, then the last: never "b b"
    assert queued_body == b""  # nothing was sent to the client that left while queued
    assert answer["choices"][0]["message"]["content"] == "c c"
    rows = {row["client"]: row for row in latest(corral_home / "requests.db", 3)}
    assert (rows["127.0.0.1:1001"]["status"], rows["127.0.0.1:1002"]["status"]) == (499, 499)
    assert rows["127.0.0.1:1002"]["completion_tokens"] == 0


@contextlib.asynccontextmanager
async def uvicorn_serving(rt: Any) -> AsyncIterator[int]:
    """``create_app`` over ``rt`` under a real uvicorn server on 127.0.0.1 (in this event loop): its port."""
    app = create_app(rt, ServeOptions(), ServerState())
    config = uvicorn.Config(app, host=HOST, port=free_port(), lifespan="on", log_level="critical")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    await until(lambda: server.started or task.done())
    try:
        yield config.port
    finally:
        server.should_exit = True
        await task


def test_a_reader_that_never_drains_pauses_its_engine_and_is_cut_off_after_the_stall_timeout(
        tmp_path: Path, corral_home: Path) -> None:
    register(tmp_path, "echo", repeat=True, context=1_000_000)
    asked = 200_000  # about 30 MB of events: far more than socket buffers hold

    async def scenario() -> tuple[int, bool, int, str]:
        rt = fake_runtime(stall_timeout=1.0)
        async with uvicorn_serving(rt) as port:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, then nothing read
            sock.connect((HOST, port))
            body = json.dumps(chat_body("la la", stream=True, max_tokens=asked)).encode()
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json"
                         b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await until(lambda: "echo" in rt.registry.models and bool(prompts_generated(rt)))
            engine = loaded_fake(rt, "echo")
            closed = await asyncio.to_thread(engine.wait_until, lambda: engine.generations[0].closed, 30)
            await until(lambda: rt.status().models[0].in_flight == 0, 30)
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as http:
                after = await http.post(CHAT, json=chat_body("still here", max_tokens=2))
            sock.close()
            return engine.generations[0].produced, closed, after.status_code, after.json()["choices"][0][
                "message"]["content"]

    produced, closed, status, content = run(scenario())
    assert closed and produced < asked // 4  # paused within a few thousand tokens, then stopped
    assert (status, content) == (200, "still here")
    row = next(r for r in latest(corral_home / "requests.db", 2) if r["completion_tokens"] != 2)
    assert row["status"] == 499
