"""Chat with images on tiny random-weight image-text models built from configs (LLaVA-style and
Idefics3 / SmolVLM-style, with their processors): the answer equals transformers' own greedy
generate on the processor's inputs, through the CLI (``--image``; describe_image for a photo alone),
the OpenAI door (the official client, ``image_url`` data URLs, streamed and not), the sidecar, and
remote ``image_url``s only when the server allows them (a local image server, allowed by network).
A text-only model refuses images with 400 and the server keeps serving. A model whose processor needs
a package that is not installed (Qwen2-VL: torchvision) says so at inspect time and at load."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli
from tests.fixtures.tiny_models import build_causal_lm
from tests.fixtures.tiny_vlm import build_idefics3, build_llava, build_qwen2_vl_without_processor

from corral.sidecar.client import SidecarClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
QUESTION = "what is in the picture?"
TOKENS = 6


def png(colour: tuple[int, int, int] = (9, 99, 200)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (40, 30), colour)
    ImageDraw.Draw(image).ellipse((5, 5, 25, 25), fill=(250, 250, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def greedy(path: Path, prompt: str, images: list[bytes], *, text_first: bool = False) -> str:
    """transformers by hand: the processor's own chat template and inputs, greedy generate; the
    images before the text (or after it, ``text_first``)."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(str(path))
    model = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    pictures: list[dict[str, str]] = [{"type": "image"} for _ in images]
    words = [{"type": "text", "text": prompt}]
    content = words + pictures if text_first else pictures + words
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    decoded = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    inputs = processor(text=[text], images=[decoded] if decoded else None, return_tensors="pt",
                       add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=TOKENS, do_sample=False)
    new = [t for t in out[0, inputs["input_ids"].shape[1]:].tolist() if t != processor.tokenizer.eos_token_id]
    return str(processor.tokenizer.decode(new, skip_special_tokens=True))


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llava(tmp_path_factory.mktemp("llava")).path


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_cli_answers_as_transformers_does(family: str, tmp_path: Path) -> None:
    model = (build_llava if family == "llava" else build_idefics3)(tmp_path / family).path
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "b.png").write_bytes(png((200, 10, 10)))
    assert run_cli("pull", str(model), "--name", family).returncode == 0
    info = json.loads(run_cli("inspect", family, "--json").stdout)
    assert info["tasks"][:2] == ["describe_image", "chat"] and info["engine"] == "transformers"
    r = run_cli("run", family, QUESTION, "--image", str(tmp_path / "a.png"), "--image", str(tmp_path / "b.png"),
                "--max-tokens", str(TOKENS), "--temperature", "0", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["task"] == "chat" and got["text"] == greedy(model, QUESTION, [png(), png((200, 10, 10))])
    assert got["usage"]["prompt_tokens"] > 2 * 16  # each image's placeholder expanded to its patches
    r = run_cli("run", family, str(tmp_path / "a.png"), "--max-tokens", str(TOKENS), "--json")
    assert r.returncode == 0, r.stderr
    described = json.loads(r.stdout)
    assert described["task"] == "describe_image"
    assert described["text"] == greedy(model, "Describe this image.", [png()])


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/moved.png":
            self.send_response(301)
            self.send_header("Location", "/photo.png")
            self.end_headers()
            return
        body = png()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def ask(client: Any, model: str, url: str, **kw: Any) -> Any:
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          max_tokens=TOKENS, temperature=0, **kw)


def test_openai_door_sidecar_and_refusals(llava: Path, tmp_path: Path, image_server: str) -> None:
    import openai
    from tests.server.conftest import Server

    expected = greedy(llava, QUESTION, [png()])
    text_model = build_causal_lm("llama", tmp_path / "lm").path
    srv = Server(tmp_path / "served", register={"llava": llava, "lm": text_model})
    try:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0)
        # the question after the image in the message: parts keep their order
        text_first = greedy(llava, QUESTION, [png()], text_first=True)
        assert ask(client, "llava", data_url(png())).choices[0].message.content == text_first
        stream = ask(client, "llava", data_url(png()), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text_first
        with pytest.raises(openai.BadRequestError, match="does not read images"):
            ask(client, "lm", data_url(png()))
        with pytest.raises(openai.BadRequestError, match="remote media"):
            ask(client, "llava", f"{image_server}/photo.png")
        with pytest.raises(openai.BadRequestError, match="not an image"):
            ask(client, "llava", data_url(b"GIF89a but not really"))
        with pytest.raises(openai.BadRequestError):
            ask(client, "llava", "file:///etc/passwd")
        assert client.chat.completions.create(model="lm", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=2).choices[0].finish_reason in ("stop", "length")
        # the same picture through Ollama's images and Anthropic's image blocks: the same answer
        import anthropic
        import ollama

        b64 = base64.b64encode(png()).decode()
        said = ollama.Client(host=srv.url).chat(model="llava:latest", options={"temperature": 0, "num_predict": TOKENS},
                                                messages=[{"role": "user", "content": QUESTION, "images": [b64]}])
        assert said.message.content == text_first
        blocks = [{"type": "text", "text": QUESTION},
                  {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}}]
        message = anthropic.Anthropic(base_url=srv.url, api_key="none").messages.create(
            model="llava", max_tokens=TOKENS, messages=[{"role": "user", "content": blocks}],
            extra_body={"temperature": 0})
        assert message.content[0].text == text_first  # type: ignore[union-attr]
    finally:
        srv.stop()
    with SidecarClient(env={"CORRAL_HOME": str(tmp_path / "served"), "CORRAL_CONFIG": str(tmp_path / "none.toml"),
                            "HF_HOME": str(tmp_path / "served" / "hf")}) as sidecar:
        content = [{"type": "image_url", "image_url": {"url": data_url(png())}}, {"type": "text", "text": QUESTION}]
        result = sidecar.call("chat", {"model": "llava", "messages": [{"role": "user", "content": content}],
                                       "max_tokens": TOKENS, "temperature": 0})
        assert result["choices"][0]["message"]["content"] == expected


def test_remote_images_only_from_an_allowed_network(llava: Path, tmp_path: Path, image_server: str) -> None:
    import openai
    from tests.server.conftest import Server

    srv = Server(tmp_path / "served", "--allow-remote-media", "--allow-media-network", "127.0.0.1/32",
                 register={"llava": llava})
    try:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0)
        assert ask(client, "llava", f"{image_server}/photo.png").choices[0].message.content == \
            greedy(llava, QUESTION, [png()], text_first=True)
        with pytest.raises(openai.BadRequestError, match="redirects"):
            ask(client, "llava", f"{image_server}/moved.png")
        port = image_server.rsplit(":", 1)[1]
        with pytest.raises(openai.BadRequestError, match="does not fetch from"):
            ask(client, "llava", f"http://[::1]:{port}/photo.png")  # loopback, but not the network allowed
    finally:
        srv.stop()


def test_a_model_needing_a_missing_package_says_so_before_loading(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.fail("this test checks the torchvision-less build; torchvision is installed here")
    model = build_qwen2_vl_without_processor(tmp_path / "qwen").path
    assert run_cli("pull", str(model), "--name", "qwen").returncode == 0
    info = json.loads(run_cli("inspect", "qwen", "--json").stdout)
    assert info["tasks"][:2] == ["describe_image", "chat"]
    assert {"package": "torchvision", "installed": False} in info["requirements"]
    r = run_cli("run", "qwen", "hello", "--task", "chat", "--max-tokens", "2")
    assert r.returncode != 0 and "needs the Python package 'torchvision'" in r.stderr
    assert "pip install torchvision" in r.stderr and "Traceback" not in r.stderr
