"""The catalogue's row 9 (issue 18): keys and hosts. With a key set, a request without it, with a
wrong one, or with it in the query string is a 401 in its API's shape on every door; the right key
works as a bearer token and as Anthropic's x-api-key; keys are compared in constant time (every
comparison goes through hmac.compare_digest); the key appears in no response, log line or request
log row; a forged Host or Origin is a 403; a non-loopback bind without a key refuses to start."""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.server.test_fake_http import HOST, fake_runtime, lifespan, register, run

from corral.api.app import ServeOptions, create_app
from corral.api.guard import ServerState
from corral.cli.main import main

pytestmark = pytest.mark.timeout(60)
KEY = "k-SECRET-7f3a9c"
CHAT = [{"role": "user", "content": "hi"}]
DOORS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"model": "echo", "messages": CHAT}),
    ("/api/chat", {"model": "echo", "messages": CHAT, "stream": False}),
    ("/v1/messages", {"model": "echo", "max_tokens": 5, "messages": CHAT}),
    ("/v1/responses", {"model": "echo", "input": "hi"}),
    ("/models/echo", {"inputs": "hi"}),
]


@contextlib.asynccontextmanager
async def keyed() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(fake_runtime(), ServeOptions(api_keys=[KEY]), ServerState())
    async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{HOST}",
                                                timeout=30) as client:
        yield client


def message_of(path: str, body: Any) -> str:
    if path.startswith("/api/"):
        return str(body["error"])
    return str(body["error"]["message"])


def test_keys_on_every_door(tmp_path: Path, corral_home: Path, caplog: pytest.LogCaptureFixture,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    register(tmp_path, "echo", tasks=("chat", "complete", "embed"))
    compared: list[int] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        compared.append(1)
        return real(a, b)

    monkeypatch.setattr("corral.api.guard.hmac.compare_digest", counting)
    caplog.set_level(logging.DEBUG)

    async def scenario() -> list[tuple[str, str, httpx.Response]]:
        out = []
        async with keyed() as http:
            for path, body in DOORS:
                for how, headers, query in (("none", {}, ""), ("wrong", {"Authorization": "Bearer nope"}, ""),
                                            ("query", {}, f"?api_key={KEY}&key={KEY}&token={KEY}"),
                                            ("bearer", {"Authorization": f"Bearer {KEY}"}, ""),
                                            ("x-api-key", {"x-api-key": KEY}, "")):
                    out.append((path, how, await http.post(path + query, json=body, headers=headers)))
        return out

    answers = run(scenario())
    for path, how, r in answers:
        if how in ("bearer", "x-api-key"):
            assert r.status_code == 200, (path, how, r.text)
        else:
            assert r.status_code == 401, (path, how, r.text)
            assert "API key" in message_of(path, r.json())
        assert KEY not in r.text
    assert len(compared) >= 3 * len(DOORS)  # wrong, bearer and x-api-key each compared in constant time
    server_lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]  # not the client's
    assert server_lines and not any(KEY in line for line in server_lines)
    assert KEY.encode() not in (corral_home / "requests.db").read_bytes()


def test_forged_host_and_origin(tmp_path: Path) -> None:
    register(tmp_path, "echo")

    async def scenario() -> list[httpx.Response]:
        async with keyed() as http:
            auth = {"Authorization": f"Bearer {KEY}"}
            return [await http.post(path, json=body, headers={**auth, **forged}) for path, body in DOORS
                    for forged in ({"Host": "evil.example"}, {"Origin": "http://evil.example"},
                                   {"Host": "127.0.0.1.evil.example:8000"})]

    for r in run(scenario()):
        assert r.status_code == 403 and "not allowed" in r.text


def test_a_public_bind_without_a_key_refuses_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "without an API key" in err and "--api-key" in err
