"""The catalogue's row 1 (issue 18): hostile model names over every door: the OpenAI, Hugging Face,
Ollama, Anthropic and Responses routes and corral's admin routes (in-process, over the fake
engine), the sidecar's methods and the CLI. Each answers 400 or 404 in its own API's error shape,
and an audit hook (``sys.addaudithook``) sees no file outside the test's folders opened, listed or
removed while they run."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from tests.server.test_fake_http import fake_runtime, register, run, serving

from corral.cli.main import main
from corral.errors import CorralError

pytestmark = pytest.mark.timeout(120)
NAMES = ["../../etc/passwd", "..\\..\\x", "/etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "a\x00b", "x" * 300,
         "a\r\nb", "<script>alert(1)</script>", "hf:../../etc", "pkg:../x", "~root/.ssh/id_rsa"]
WATCHED = ("open", "os.listdir", "os.scandir", "os.remove", "os.unlink", "shutil.rmtree", "os.rename")
SEEN: list[tuple[str, str]] = []
WATCHING: list[bool] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if WATCHING and event in WATCHED and args and isinstance(args[0], str | bytes | Path):
        SEEN.append((event, str(args[0])))


sys.addaudithook(_hook)  # cannot be removed: it records only while a test of this module watches


def bodies(name: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, JSON body) for every door that takes a model name."""
    chat = [{"role": "user", "content": "hi"}]
    quoted = quote(name, safe="")
    return [("POST", "/v1/chat/completions", {"model": name, "messages": chat}),
            ("POST", "/v1/completions", {"model": name, "prompt": "hi"}),
            ("POST", "/v1/embeddings", {"model": name, "input": "hi"}),
            ("POST", f"/models/{quoted}", {"inputs": "hi"}),
            ("POST", "/api/chat", {"model": name, "messages": chat}),
            ("POST", "/api/generate", {"model": name, "prompt": "hi"}),
            ("POST", "/api/embed", {"model": name, "input": "hi"}),
            ("POST", "/api/show", {"model": name}),
            ("DELETE", "/api/delete", {"model": name}),
            ("POST", "/api/copy", {"source": "echo", "destination": name}),
            ("POST", "/api/pull", {"model": name}),
            ("POST", "/v1/messages", {"model": name, "max_tokens": 5, "messages": chat}),
            ("POST", "/v1/responses", {"model": name, "input": "hi"}),
            ("POST", f"/api/models/{quoted}/load", None),
            ("DELETE", f"/api/models/{quoted}", None),
            ("GET", f"/api/models/{quoted}/inspect", None)]


def shape_ok(path: str, body: Any) -> bool:
    """The error object of the API ``path`` belongs to."""
    if path.startswith("/api/") and not path.startswith("/api/models"):
        return isinstance(body.get("error"), str)
    if path.startswith("/v1/messages"):
        return body.get("type") == "error" and isinstance(body["error"].get("message"), str)
    return isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str)


def outside(seen: list[tuple[str, str]], allowed: list[str]) -> list[tuple[str, str]]:
    return [(e, p) for e, p in seen if (p.startswith("/") and not any(p.startswith(a) for a in allowed))
            or "passwd" in p or "id_rsa" in p or ".." in Path(p).parts]


def allowed_roots(tmp_path: Path) -> list[str]:
    import sysconfig

    return [str(tmp_path), str(Path(tmp_path).parent.parent), sys.prefix, sys.base_prefix, "/proc/", "/dev/",
            "/sys/", sysconfig.get_paths()["purelib"], str(Path(__file__).parent.parent.parent), "/tmp/", "/usr/",
            "/etc/ssl", "/etc/localtime", "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf",
            "/etc/gai.conf", "/etc/host.conf", "/etc/mime.types", "/root/.cache"]


def test_every_http_door(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    register(tmp_path, "echo")

    async def scenario() -> list[tuple[str, str, int, Any]]:
        async with serving(fake_runtime()) as (_, http):
            out = []
            WATCHING.append(True)
            try:
                for name in NAMES:
                    for method, path, body in bodies(name):
                        r = await http.request(method, path, json=body)
                        out.append((name, path, r.status_code, r.json()))
            finally:
                WATCHING.clear()
            return out

    SEEN.clear()
    answers = run(scenario())
    WATCHING.append(True)
    try:  # the watch works: a file read now is seen, and one outside would be reported
        (tmp_path / "probe.txt").write_text("x")
    finally:
        WATCHING.clear()
    assert ("open", str(tmp_path / "probe.txt")) in SEEN
    assert outside([("open", "/etc/passwd")], allowed_roots(tmp_path)) == [("open", "/etc/passwd")]
    SEEN.remove(("open", str(tmp_path / "probe.txt")))
    bad = [(n, p, s) for n, p, s, body in answers if s not in (400, 404) or not shape_ok(p, body)]
    assert bad == []
    assert main(["logs", "-n", "1000"]) == 0  # the names as logged, escaped: no line broken, no NUL
    shown = capsys.readouterr().out
    assert "a\\r\\nb" in shown and "a\\x00b" in shown and "\r" not in shown and "\x00" not in shown
    assert len(shown.splitlines()) == 1 + sum(1 for line in shown.splitlines()[1:] if line[:2].isdigit())
    assert outside(SEEN, allowed_roots(tmp_path)) == []


def test_the_sidecar_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from corral.sidecar import methods
    from corral.sidecar.server import error_for

    register(tmp_path, "echo")

    async def sidecar() -> list[Any]:
        out = []
        async with fake_runtime() as rt:
            session = methods.Session(rt, 1, lambda method, params: None)
            for name in NAMES:
                for call, params in ((methods.chat, {"model": name, "messages": [{"role": "user", "content": "x"}]}),
                                     (methods.embed, {"model": name, "input": "x"})):
                    try:
                        await call(session, params)
                        out.append((name, "answered"))
                    except (CorralError, ValueError) as exc:
                        out.append((name, error_for(exc)))
        return out

    SEEN.clear()
    WATCHING.append(True)
    try:
        answers = asyncio.run(sidecar())
        codes = [main(["run", name, "hi"]) for name in NAMES] + [main(["inspect", name]) for name in NAMES]
    finally:
        WATCHING.clear()
    assert all(isinstance(a, tuple) and a[1] != "answered" for a in answers), answers
    assert all(isinstance(a[1][1], str) and a[1][1] for a in answers)  # a message for each
    assert set(codes) <= {1, 2} and "Traceback" not in capsys.readouterr().err
    assert outside(SEEN, allowed_roots(tmp_path)) == []


def test_made_up_names_leave_no_metrics_series(tmp_path: Path) -> None:
    """Every label value of a metric is kept for the life of the server: a client that sends a new
    made-up model name per request must not grow ``/metrics`` (or the server's memory) by one series
    each. Client errors on unknown names are counted under "-"; served models keep their own label."""
    from tests.server.test_fake_http import chat_body

    register(tmp_path, "echo")

    async def scenario() -> tuple[str, str, list[int]]:
        async with serving(fake_runtime()) as (_, http):
            assert (await http.post("/v1/chat/completions", json=chat_body("hi"))).status_code == 200
            statuses = [(await http.post("/v1/chat/completions", json=chat_body("hi", model="made-up-0"))).status_code]
            before = (await http.get("/metrics")).text
            for i in range(1, 60):
                body = chat_body("hi", model=f"made-up-{i}")
                statuses.append((await http.post("/v1/chat/completions", json=body)).status_code)
            return before, (await http.get("/metrics")).text, statuses

    before, after, statuses = run(scenario())
    assert set(statuses) == {404}
    assert 'model="echo"' in after and "made-up" not in after  # the served model is labelled, the rest are not
    series = [line for line in after.splitlines() if line and not line.startswith("#")]
    assert len(series) == len([line for line in before.splitlines() if line and not line.startswith("#")])
    refused = [line for line in series if line.startswith("corral_requests_total{") and 'model="-"' in line]
    assert refused and float(refused[0].split()[-1]) >= 60  # each refusal still counted, under "-"
