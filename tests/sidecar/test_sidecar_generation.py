"""The sidecar streams the Hugging Face-shaped generation tasks (translate, summarize, describe_image)
on tiny random-weight models (T5, a ViT + GPT-2 captioner) through `corral sidecar` as a real
subprocess: the ``stream/delta`` chunks joined equal the unstreamed answer's text and the final
response equals the unstreamed one; a list of inputs streams each by its index; a cancel mid-stream
stops the generation (the log's 499 row counts only the tokens made) and answers -32800, as chat
does; a task that does not stream refuses ``stream``."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli
from tests.fixtures.tiny_media import build_captioner
from tests.fixtures.tiny_models import build_t5

from corral.sidecar.client import SidecarClient, SidecarError
from corral.sidecar.protocol import INVALID_PARAMS, REQUEST_CANCELLED

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TEXT = "the cat sat on the mat and the dog ran in the park"
LONG = 50_000  # tokens the cancelled generation may make: minutes of work, so the cancel always comes first


def home_env(home: Path) -> dict[str, str]:
    return {"CORRAL_HOME": str(home), "CORRAL_CONFIG": str(home / "config.toml"), "HF_HOME": str(home / "hf")}


def png() -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (40, 30), (9, 99, 200))
    ImageDraw.Draw(image).ellipse((5, 5, 25, 25), fill=(250, 250, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarClient]:
    root = tmp_path_factory.mktemp("generation")
    env = home_env(root / "home")
    # a long context: the cancel test asks for far more tokens than the client needs to send its cancel
    models = {"t5": build_t5(root / "t5", max_length=LONG).path, "cap": build_captioner(root / "cap").path}
    for name, model in models.items():
        pulled = run_cli("pull", str(model), "--name", name, env=env)
        assert pulled.returncode == 0, pulled.stderr
    with (root / "stderr.txt").open("w") as err, SidecarClient(env=env, stderr=err) as client:
        yield client
    assert client.proc.returncode == 0
    assert client.bad_lines == []


def streamed(client: SidecarClient, method: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """The deltas of ``method`` asked with ``stream: true``, and its final response."""
    call = client.stream(method, params)
    deltas = list(call.deltas(timeout=300))
    answers = [m for m in client.messages if "method" not in m and m.get("id") == call.id]
    assert len(answers) == 1  # exactly one final response
    return deltas, call.final


def joined(deltas: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(d["text"] for d in deltas if d["index"] == index)


def generate(tokens: int) -> dict[str, Any]:
    """Seeded sampling: random weights decode greedily to one repeated byte token (no text until the
    end) or to padding (no text at all); sampled, they make text piece by piece, the same every time."""
    return {"generate_parameters": {"max_new_tokens": tokens, "do_sample": True, "seed": 7}}


@pytest.mark.parametrize(("method", "parameters", "key"), [
    ("translate", {"src_lang": "English", "tgt_lang": "French"}, "translation_text"),
    ("summarize", {}, "summary_text"),
])
def test_text_generation_streamed_equals_unstreamed(sidecar: SidecarClient, method: str, parameters: dict[str, Any],
                                                    key: str) -> None:
    params = {"model": "t5", "inputs": TEXT, "parameters": {**parameters, **generate(12)}}
    whole = sidecar.call(method, params)
    deltas, final = streamed(sidecar, method, params)
    assert final == whole and list(whole[0]) == [key]
    assert whole[0][key] and joined(deltas) == whole[0][key]
    assert len([d for d in deltas if d["text"]]) > 1  # pieces as they came, not one block
    *pieces, last = deltas
    assert all(d["finish_reason"] is None and "usage" not in d for d in pieces)
    assert last["finish_reason"] == "length" and last["usage"]["completion_tokens"] == 12
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 12 > 12


def test_a_list_of_inputs_streams_each_by_its_index(sidecar: SidecarClient) -> None:
    params = {"model": "t5", "inputs": [TEXT, "a bird sang"], "parameters": {"tgt_lang": "German", **generate(6)}}
    whole = sidecar.call("translate", params)
    deltas, final = streamed(sidecar, "translate", params)
    assert final == whole and len(whole) == 2
    assert [joined(deltas, i) for i in (0, 1)] == [w["translation_text"] for w in whole]
    assert [d["index"] for d in deltas] == sorted(d["index"] for d in deltas)  # one after the other
    assert [d["index"] for d in deltas if d["finish_reason"]] == [0, 1]


def test_caption_streamed_equals_unstreamed(sidecar: SidecarClient) -> None:
    params = {"model": "cap", "inputs": png(), "parameters": generate(8)}
    whole = sidecar.call("describe_image", params)
    deltas, final = streamed(sidecar, "describe_image", params)
    assert final == whole and list(whole[0]) == ["generated_text"]
    assert whole[0]["generated_text"] and joined(deltas) == whole[0]["generated_text"]
    assert deltas[-1]["finish_reason"] in ("length", "stop") and deltas[-1]["usage"]["completion_tokens"] <= 8
    listed = sidecar.call("describe_image", {**params, "inputs": [png(), png()], "stream": True})
    assert listed == [whole, whole]


def test_cancel_mid_stream_stops_the_generation(sidecar: SidecarClient) -> None:
    call = sidecar.stream("translate", {"model": "t5", "inputs": TEXT,
                                        "parameters": {"tgt_lang": "French", **generate(LONG - 100)}})
    deltas = call.deltas(timeout=300)
    for seen, _ in enumerate(deltas, 1):
        if seen == 3:
            break
    call.cancel()
    with pytest.raises(SidecarError) as caught:
        list(deltas)
    assert caught.value.code == REQUEST_CANCELLED and caught.value.message == "request cancelled"
    row = next(r for r in sidecar.call("logs", {"limit": 5})["requests"] if r["status"] == 499)
    assert row["door"] == "sidecar" and row["task"] == "translate" and row["model"] == "t5"
    assert 3 <= row["completion_tokens"] < LONG - 100
    status = {m["name"]: m for m in sidecar.call("models/status")["models"]}
    assert status["t5"]["in_flight"] == 0  # the slot is free again
    again = sidecar.call("translate", {"model": "t5", "inputs": TEXT, "parameters": {"tgt_lang": "French",
                                                                                       **generate(4)}})
    assert again[0]["translation_text"]


def test_a_task_that_does_not_stream_refuses_stream(sidecar: SidecarClient) -> None:
    with pytest.raises(SidecarError) as caught:
        sidecar.call("classify_text", {"model": "t5", "inputs": TEXT, "stream": True})
    assert caught.value.code == INVALID_PARAMS and "does not stream" in caught.value.message
    assert "translate" in caught.value.data["hint"]
