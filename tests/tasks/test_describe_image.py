"""describe_image on a tiny random-weight VisionEncoderDecoder (ViT + GPT-2 with cross-attention) built
from configs: the streamed caption equals transformers' own greedy generate, through the CLI (from a file
and from stdin), the sidecar and the Hugging Face task API (InferenceClient.image_to_text)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.fixtures.tiny_media import build_captioner

from corral.sidecar.client import SidecarClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def png() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (40, 30), (9, 99, 200))
    ImageDraw.Draw(image).ellipse((5, 5, 25, 25), fill=(250, 250, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def greedy(path: Path, max_new_tokens: int) -> str:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    pixels = AutoImageProcessor.from_pretrained(str(path))(Image.open(io.BytesIO(png())).convert("RGB"),
                                                           return_tensors="pt")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    with torch.inference_mode():
        out = model.generate(**pixels, max_new_tokens=max_new_tokens, do_sample=False,
                             decoder_start_token_id=model.config.decoder_start_token_id)
    tokens = [t for t in out[0].tolist()[1:] if t != tokenizer.eos_token_id]
    return tokenizer.decode(tokens, skip_special_tokens=True)


def test_caption_equals_greedy_generate_through_every_door(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server.conftest import Server

    model = build_captioner(tmp_path / "cap").path
    expected = greedy(model, 6)
    (tmp_path / "photo.png").write_bytes(png())
    assert run_cli("pull", str(model), "--name", "cap").returncode == 0
    r = run_cli("run", "cap", str(tmp_path / "photo.png"), "--max-tokens", "6", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["task"] == "describe_image" and got["text"] == expected and got["usage"]["completion_tokens"] <= 6
    with SidecarClient() as client:
        answer = client.call("describe_image", {"model": "cap", "inputs": "data:image/png;base64,"
                                                + base64.b64encode(png()).decode(),
                                                "parameters": {"generate_parameters": {"max_new_tokens": 6}}})
        assert answer == [{"generated_text": expected}]
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    srv = Server(tmp_path / "served", register={"cap": model})
    try:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        caption = InferenceClient(model=f"{srv.url}/models/cap").image_to_text(png())
        assert caption.generated_text == greedy(model, 63)  # the default 256 tokens, capped by the 64 positions
    finally:
        srv.stop()
