"""The catalogue's row 10 (issue 18): SSRF. A canary HTTP server on 127.0.0.1 counts every request
it gets; image and audio URLs naming it (directly, as ``[::ffff:127.0.0.1]``, ``localhost``, a
decimal, hex or short IPv4 form, behind a redirect from an allowed server) or naming link-local,
private, ``file://`` or ``gopher://`` targets are sent over every door that takes media (the OpenAI,
Anthropic, Responses, Ollama and Hugging Face routes in-process, and the sidecar's chat), with remote
media off (the default: 400 saying how to enable it) and on (still 400 for every internal address).
Bodies naming an upstream (``api_base``, ``base_url``, ``api_key``, ... as LiteLLM's proxy reads
them) are refused with 400 naming the field on every generation route, also when the model is a
gateway provider's (a stand-in upstream sees nothing), while the official openai SDK's ordinary
requests pass. A LiteLLM provider without a base_url refuses model names on LiteLLM's self-hosted
routes (``ollama/...``: localhost by default, the canary here). The canary's count stays 0; two tests
let it through on purpose (the operator allowing its network, or naming it as base_url), to show it
counts. (A public-looking name that resolves to loopback is tests/test_remote_media.py's, with its
resolver injected: no DNS here.)"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.gateway.standin_openai import StandIn
from tests.server.test_fake_http import fake_runtime, register, run, serving

from corral.errors import CorralError

pytestmark = pytest.mark.timeout(120)
UPSTREAM_FIELDS = ("api_base", "base_url", "api_key", "api_version", "custom_llm_provider")


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


class Listener:
    """A real HTTP server on ``host`` that counts the requests it gets: ``/redirect`` answers 302 to
    ``location``, anything else a small PNG."""

    def __init__(self, host: str, location: str = "") -> None:
        self.hits: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.hits.append(self.path)
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = png()
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_HEAD = do_PUT = do_GET  # any method counts as a hit

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canary() -> Iterator[Listener]:
    server = Listener("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def relay(canary: Listener) -> Iterator[Listener]:
    """An image server the operator allowed (127.0.0.2, a network of its own), whose /redirect
    points into the canary."""
    server = Listener("127.0.0.2", location=f"{canary.url}/after-redirect.png")
    yield server
    server.close()


def internal_urls(port: int) -> list[str]:
    """URLs naming the canary or another internal target, in the forms a filter might miss."""
    return [f"http://127.0.0.1:{port}/x.png", f"http://[::ffff:127.0.0.1]:{port}/x.png",
            f"http://[::ffff:7f00:1]:{port}/x.png", f"http://[::1]:{port}/x.png", f"http://localhost:{port}/x.png",
            f"http://2130706433:{port}/x.png", f"http://0x7f000001:{port}/x.png", f"http://127.1:{port}/x.png",
            f"http://0177.0.0.1:{port}/x.png", f"http://0.0.0.0:{port}/x.png", f"HTTP://127.0.0.1:{port}/x.png",
            f"http://user:pw@127.0.0.1:{port}/x.png", f"http://127.0.0.2@127.0.0.1:{port}/x.png",
            "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x.png", "http://10.0.0.1/x.png",
            "http://192.168.1.1/x.png", "http://172.16.0.1/x.png", "http://100.64.0.1/x.png",
            "file:///etc/passwd", f"gopher://127.0.0.1:{port}/_GET%20/", f"ftp://127.0.0.1:{port}/x.png",
            f"dict://127.0.0.1:{port}/info"]


def image_requests(url: str) -> list[tuple[str, bool, dict[str, Any]]]:
    """(route, whether the door may fetch a URL at all, body) for every HTTP door that takes an image
    or audio: the OpenAI, Anthropic and Responses chats (image URLs, under the remote-media rules),
    Ollama's chat and generate and the Hugging Face task API (media by value only), and audio parts
    in an OpenAI chat (input_audio data, vLLM's audio_url)."""
    text = {"type": "text", "text": "what is this?"}
    return [("/v1/chat/completions", True, {"model": "echo", "messages": [
                {"role": "user", "content": [text, {"type": "image_url", "image_url": {"url": url}}]}]}),
            ("/v1/chat/completions", True, {"model": "echo", "messages": [
                {"role": "user", "content": [text, {"type": "image_url", "image_url": url}]}]}),
            ("/v1/messages", True, {"model": "echo", "max_tokens": 5, "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": url}}, text]}]}),
            ("/v1/responses", True, {"model": "echo", "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": url},
                                             {"type": "input_text", "text": "what is this?"}]}]}),
            ("/api/chat", False, {"model": "echo", "stream": False,
                                  "messages": [{"role": "user", "content": "what?", "images": [url]}]}),
            ("/api/generate", False, {"model": "echo", "stream": False, "prompt": "what?", "images": [url]}),
            ("/models/pictures", False, {"inputs": url}),
            ("/models/listener", False, {"inputs": url}),
            ("/v1/chat/completions", False, {"model": "echo", "messages": [{"role": "user", "content": [
                text, {"type": "input_audio", "input_audio": {"data": url, "format": "wav"}}]}]}),
            ("/v1/chat/completions", False, {"model": "echo", "messages": [{"role": "user", "content": [
                text, {"type": "audio_url", "audio_url": {"url": url}}]}]})]


def message_of(body: Any) -> str:
    """The error message, in any of the APIs' shapes."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else str((error or {}).get("message", body))


@pytest.fixture(scope="module")
def media_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny image classifier and a tiny speech recogniser (real folders, never loaded here: media is
    checked before any model is touched)."""
    from tests.fixtures.tiny_media import build_vit, build_whisper

    root = tmp_path_factory.mktemp("media-models")
    return {"pictures": build_vit(root / "vit").path, "listener": build_whisper(root / "whisper").path}


def register_models(tmp_path: Path, media_models: dict[str, Path]) -> None:
    """echo (the fake engine: chat, complete, embed) and the media models, in this test's store."""
    from corral.config import load_settings
    from corral.models.refs import parse_ref
    from corral.models.resolve import Resolver
    from corral.models.store import Store

    register(tmp_path, "echo", tasks=("chat", "complete", "embed"))
    settings = load_settings()
    resolver = Resolver(settings, Store(settings.manifest_path))
    for name, folder in media_models.items():
        resolver.register(parse_ref(str(folder)), name=name, explicit_name=True, progress=False)


def answers(urls: list[str]) -> list[tuple[str, str, bool, int, str]]:
    """(url, route, fetching door, status, message) for each URL sent over each door of a fresh
    in-process server."""

    async def scenario() -> list[tuple[str, str, bool, int, str]]:
        out = []
        async with serving(fake_runtime()) as (_, http):
            for url in urls:
                for route, fetching, body in image_requests(url):
                    r = await http.post(route, json=body)
                    out.append((url, route, fetching, r.status_code, message_of(r.json())))
        return out

    return run(scenario())


def sidecar_chat(urls: list[str]) -> list[str]:
    """The sidecar's answer to a chat with each URL as its image: the error's message."""
    from corral.sidecar import methods

    async def scenario() -> list[str]:
        out = []
        async with fake_runtime() as rt:
            session = methods.Session(rt, 1, lambda method, params: None)
            for url in urls:
                parts = [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}}]
                try:
                    await methods.chat(session, {"model": "echo", "messages": [{"role": "user", "content": parts}]})
                    out.append("answered")
                except CorralError as exc:
                    out.append(exc.message + f" ({exc.hint})")
        return out

    return run(scenario())


def is_http(url: str) -> bool:
    return url.lower().startswith("http://")


def by_value_refusal(message: str) -> bool:
    """The words of a door that takes media by value only, refusing a URL (or, for audio parts a chat
    does not take, the part)."""
    return ("is a URL; corral does not fetch remote media" in message or "URL, which corral never reads" in message
            or "messages.0.content" in message)


def test_remote_media_is_off_by_default(tmp_path: Path, canary: Listener, media_models: dict[str, Path]) -> None:
    register_models(tmp_path, media_models)
    urls = internal_urls(canary.port)
    got = answers(urls)
    assert [(u, r, s) for u, r, _, s, _ in got if s != 400] == []
    assert [(u, r, m) for u, r, f, _, m in got if f and is_http(u) and not (
        "does not fetch remote media" in m and "--allow-remote-media" in m)] == []
    assert [(u, r, m) for u, r, f, _, m in got if f and not is_http(u) and "URL, which corral never reads" not in m] \
        == []
    assert [(u, r, m) for u, r, f, _, m in got if not f and not by_value_refusal(m)] == []
    said = sidecar_chat([f"{canary.url}/x.png", "file:///etc/passwd"])
    assert "--allow-remote-media" in said[0] and "file: URL, which corral never reads" in said[1]
    assert canary.hits == []


def test_enabled_remote_media_still_refuses_internal_addresses(
        tmp_path: Path, canary: Listener, relay: Listener, media_models: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_ALLOW_REMOTE_MEDIA", "1")
    monkeypatch.setenv("CORRAL_MEDIA_NETWORKS", "127.0.0.2/32")  # the relay's address only
    register_models(tmp_path, media_models)
    urls = [*internal_urls(canary.port), f"{relay.url}/redirect"]
    got = answers(urls)
    assert [(u, r, s, m) for u, r, _, s, m in got if s != 400] == []
    internal = ("does not fetch from", "user name or password")
    assert [(u, r, m) for u, r, f, _, m in got if f and is_http(u) and "/redirect" not in u
            and not any(words in m for words in internal)] == []
    assert [(u, r, m) for u, r, f, _, m in got if f and u.endswith("/redirect") and "redirects" not in m] == []
    assert [(u, r, m) for u, r, f, _, m in got if f and not is_http(u) and "URL, which corral never reads" not in m] \
        == []
    assert [(u, r, m) for u, r, f, _, m in got if not f and not by_value_refusal(m)] == []
    said = sidecar_chat(urls)
    assert all(any(words in m for words in (*internal, "redirects", "never reads")) for m in said), said
    assert canary.hits == []
    assert relay.hits and set(relay.hits) == {"/redirect"}  # the allowed server was asked; its redirect not followed


def test_the_canary_counts_when_its_network_is_allowed(tmp_path: Path, canary: Listener,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same request reaches the canary once the operator allows 127.0.0.1, so a zero
    count elsewhere means refused, not unreachable."""
    monkeypatch.setenv("CORRAL_ALLOW_REMOTE_MEDIA", "1")
    monkeypatch.setenv("CORRAL_MEDIA_NETWORKS", "127.0.0.1/32")
    register(tmp_path, "echo")

    async def scenario() -> httpx.Response:
        async with serving(fake_runtime()) as (_, http):
            return await http.post("/v1/chat/completions", json=image_requests(f"{canary.url}/seen.png")[0][2])

    run(scenario())
    assert canary.hits == ["/seen.png"]


def upstream_requests(field: str, value: str) -> list[tuple[str, dict[str, Any]]]:
    chat = [{"role": "user", "content": "hi"}]
    return [("/v1/chat/completions", {"model": "echo", "messages": chat, field: value}),
            ("/v1/completions", {"model": "echo", "prompt": "hi", field: value}),
            ("/v1/embeddings", {"model": "echo", "input": "hi", field: value}),
            ("/v1/messages", {"model": "echo", "max_tokens": 5, "messages": chat, field: value}),
            ("/v1/messages/count_tokens", {"model": "echo", "messages": chat, field: value}),
            ("/v1/responses", {"model": "echo", "input": "hi", field: value}),
            ("/api/chat", {"model": "echo", "stream": False, "messages": chat, field: value}),
            ("/api/generate", {"model": "echo", "stream": False, "prompt": "hi", field: value}),
            ("/api/embed", {"model": "echo", "input": "hi", field: value}),
            ("/api/embeddings", {"model": "echo", "prompt": "hi", field: value})]


def test_a_body_naming_an_upstream_is_refused(tmp_path: Path, canary: Listener) -> None:
    register(tmp_path, "echo", tasks=("chat", "complete", "embed"))

    async def scenario() -> list[tuple[str, str, int, str]]:
        out = []
        async with serving(fake_runtime()) as (_, http):
            for field in UPSTREAM_FIELDS:
                for route, body in upstream_requests(field, f"{canary.url}/v1"):
                    r = await http.post(route, json=body)
                    out.append((field, route, r.status_code, message_of(r.json())))
        return out

    got = run(scenario())
    assert [(f, r, s) for f, r, s, _ in got if s != 400] == []
    assert [(f, r, m) for f, r, s, m in got if f not in m] == []  # the message names the field
    from corral.sidecar import methods

    async def sidecar() -> list[str]:
        out = []
        async with fake_runtime() as rt:
            session = methods.Session(rt, 1, lambda method, params: None)
            for field in UPSTREAM_FIELDS:
                try:
                    await methods.chat(session, {"model": "echo", "messages": [{"role": "user", "content": "hi"}],
                                                 field: canary.url})
                    out.append("answered")
                except ValueError as exc:
                    out.append(str(exc))
        return out

    refusals = run(sidecar())
    assert all(field in said for field, said in zip(UPSTREAM_FIELDS, refusals, strict=True)), refusals
    assert canary.hits == []


def test_the_openai_sdk_still_works_and_extra_body_cannot_pick_an_upstream(tmp_path: Path, canary: Listener) -> None:
    import openai

    register(tmp_path, "echo", tasks=("chat", "complete", "embed"))

    async def scenario() -> tuple[Any, Any, str]:
        async with serving(fake_runtime()) as (app, _):
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1/v1")
            client = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="sk-none", http_client=http,
                                        max_retries=0)
            answer = await client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "one two three"}], max_tokens=2, temperature=0.5,
                top_p=0.9, seed=1, stop=["x"], user="u-1", n=1, presence_penalty=0, frequency_penalty=0,
                metadata={"k": "v"}, store=False, parallel_tool_calls=False, service_tier="auto")
            vectors = await client.embeddings.create(model="echo", input=["a b"], encoding_format="float")
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}],
                                                     extra_body={"api_base": canary.url})
            await http.aclose()
            return answer, vectors, str(refused.value)

    answer, vectors, refused = run(scenario())
    assert answer.choices[0].message.content == "one two" and len(vectors.data) == 1
    assert "api_base" in refused
    assert canary.hits == []


def test_a_gateway_model_cannot_be_pointed_elsewhere(tmp_path: Path, canary: Listener) -> None:
    """The upstream of PROVIDER/ID comes from the config alone: a body naming another is refused
    before the provider is called, and a plain one reaches the configured stand-in only."""
    with StandIn("up", reply="from the configured upstream") as up:
        (tmp_path / "config.toml").write_text(
            f'[providers.up]\ntype = "openai"\nbase_url = "{up.url}"\n'
            "retries = { max = 0, backoff = 0 }\n")

        async def scenario() -> list[httpx.Response]:
            out = []
            async with serving(fake_runtime()) as (_, http):
                for field in UPSTREAM_FIELDS:
                    for route, body in upstream_requests(field, f"{canary.url}/v1"):
                        out.append(await http.post(route, json={**body, "model": "up/small"}))
                out.append(await http.post("/v1/chat/completions", json={
                    "model": "up/small", "messages": [{"role": "user", "content": "hi"}]}))
            return out

        got = run(scenario())
        refused, plain = got[:-1], got[-1]
        assert [r.status_code for r in refused] == [400] * len(refused)
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"] == "from the configured upstream"
        assert [r["path"] for r in up.requests] == ["/v1/chat/completions"]  # only the plain request went up
    assert canary.hits == []


def test_a_litellm_model_name_cannot_reach_a_local_server(tmp_path: Path, canary: Listener,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """LiteLLM's id picks its route, and its self-hosted routes connect to localhost (or to their
    ``*_API_BASE`` variable: here the canary). Without a base_url in the provider's config, a request
    naming such a route is refused before LiteLLM runs; with one, the configured server is used."""
    monkeypatch.setenv("OLLAMA_API_BASE", canary.url)
    (tmp_path / "config.toml").write_text(
        '[providers.tail]\ntype = "litellm"\nretries = { max = 0, backoff = 0 }\n'
        f'[providers.named]\ntype = "litellm"\nbase_url = "{canary.url}"\nretries = {{ max = 0, backoff = 0 }}\n')
    chat = [{"role": "user", "content": "hi"}]

    async def scenario() -> tuple[list[httpx.Response], int]:
        refused = []
        async with serving(fake_runtime()) as (_, http):
            for model in ("tail/ollama/x", "tail/ollama_chat/x", "tail/llamafile/x", "tail/hosted_vllm/x",
                          "tail/lm_studio/x"):
                refused.append(await http.post("/v1/chat/completions", json={"model": model, "messages": chat}))
            refused.append(await http.post("/v1/embeddings", json={"model": "tail/ollama/x", "input": "hi"}))
            refused.append(await http.post("/api/chat", json={"model": "tail/ollama/x", "messages": chat,
                                                              "stream": False}))
            hits_before = len(canary.hits)
            await http.post("/v1/chat/completions", json={"model": "named/ollama/x", "messages": chat})
        return refused, hits_before

    refused, hits_before = run(scenario())
    assert [r.status_code for r in refused] == [400] * len(refused)
    assert all("base_url" in message_of(r.json()) for r in refused)
    assert hits_before == 0
    assert canary.hits  # the control: the operator's own base_url is where the same route goes
