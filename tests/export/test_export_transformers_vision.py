"""Exports of transformers image and video models, run as a user runs them: tiny random-weight image
classifier (ViT), detector (DETR), segmenters (SegFormer semantic, Mask2Former and DETR panoptic,
instance), captioner (ViT + GPT-2), image-text chat models (LLaVA, Idefics3) and video classifier
(VideoMAE). Each export passes the file checks and its selftest, and its server answers every route
with corral's own answer for the same input (corral in-process, through the same protocol functions
its HF and OpenAI doors call), and refuses what is not an image or a video with a 400 error object.

The models are built, exported, selftested and served once for the module; the selftests and the
servers start side by side."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.export.helpers import (
    Export,
    check_files,
    export,
    warm_servers,
)
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_av_classifiers import build_videomae, colour_mp4
from tests.fixtures.tiny_media import build_captioner, build_detr, build_segformer, build_vit
from tests.fixtures.tiny_segmenters import build_detr_panoptic, build_mask2former
from tests.fixtures.tiny_vlm import build_idefics3, build_llava

from corral.runtime.dispatcher import CallInfo, Door

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BUILDERS: dict[str, Callable[[Path], Any]] = {
    "vit": build_vit, "detr": build_detr, "segformer": build_segformer, "mask2former": build_mask2former,
    "detr_panoptic": build_detr_panoptic, "captioner": build_captioner, "llava": build_llava,
    "idefics3": build_idefics3, "videomae": build_videomae}
TASKS = {"vit": ["classify_image"], "detr": ["detect_objects"], "segformer": ["segment_image"],
         "mask2former": ["segment_image"], "detr_panoptic": ["segment_image"], "captioner": ["describe_image"],
         "llava": ["describe_image", "chat"], "idefics3": ["describe_image", "chat"], "videomae": ["classify_video"]}
PNG = {"Content-Type": "image/png"}
NOT_AN_IMAGE = b"this is plain text, not an image"


def png(width: int = 48, height: int = 40, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(image).rectangle((5, 5, width // 2, height // 2), fill=(10, 200, 10))
    ImageDraw.Draw(image).ellipse((width // 2, height // 3, width - 4, height - 4), fill=(30, 30, 220))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def huge_png_header(width: int = 10_000, height: int = 5_000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (no pixel data follows)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + b64(data)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Export]]:
    """Every model built, exported (its own corral home), selftested and served; the selftests run side
    by side, then the servers start side by side."""
    root = tmp_path_factory.mktemp("vision-exports")
    models = {name: build(root / "models" / name).path for name, build in BUILDERS.items()}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CORRAL_HOME", str(root / "home"))
        env.setenv("CORRAL_CONFIG", str(root / "config.toml"))
        env.setenv("HF_HOME", str(root / "hf-home"))
        results = {name: export(str(model), root / "out" / name) for name, model in models.items()}
    folders = {name: root / "out" / name for name in models}
    servers, selftests = warm_servers(folders)
    try:
        yield {name: Export(name, models[name], folders[name], results[name], selftests[name], servers[name])
               for name in models}
    finally:
        for server in servers.values():
            server.stop()


def corral(model: Path, work: Callable[[Any, CallInfo], Any]) -> Any:
    """``work(runtime, call)``'s answer from corral in-process, the model registered under its folder's name."""
    runtime = runtime_with({model.name: model})

    async def scenario() -> Any:
        async with runtime:
            return await work(runtime, CallInfo(Door.HF, "test"))

    return asyncio.run(scenario())


def corral_hf(model: Path, task: str, inputs: Any, parameters: dict[str, Any] | None = None) -> Any:
    """corral's answer to POST /models/{name} for the HF task ``task``."""
    from corral.protocols.hf.tasks import HF_TASKS

    return corral(model, lambda runtime, call: HF_TASKS[task].run(runtime, model.name, inputs, parameters or {},
                                                                  call))


def same(ours: Any, theirs: Any) -> None:
    """Equal, floats within 1e-5 (scores), everything else exactly (labels, boxes, masks, texts)."""
    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=1e-5)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(theirs)
        for key in theirs:
            same(ours[key], theirs[key])
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for mine, other in zip(ours, theirs, strict=True):
            same(mine, other)
    else:
        assert ours == theirs


def refuses_what_is_not_media(item: Export, what: str = "image") -> None:
    raw = item.post(content=NOT_AN_IMAGE, headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 400, raw.text
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error" and f"not a{'n' if what == 'image' else ''} {what}" in \
        error["message"]
    wrapped = item.post({"inputs": b64(NOT_AN_IMAGE)})
    assert wrapped.status_code == 400 and wrapped.json()["error"]["param"] == "inputs"


def test_every_export_is_complete_and_passes_its_selftest(exports: dict[str, Export]) -> None:
    for name, item in exports.items():
        assert item.result["tasks"] == TASKS[name], name
        assert item.result["source"] == "copy" and "model/" in item.result["files"]
        serve = (item.out / "serve.py").read_text()
        assert "import corral" not in serve and "from corral" not in serve
        check_files(item.out)  # the same pins (only the header names another model) resolve once
        assert item.selftest.returncode == 0, f"{name}: {item.selftest.stderr}"
        assert item.selftest.stdout.startswith("selftest ok"), item.selftest.stdout
        with item.server.client() as http:
            assert http.get("/health").json() == {"status": "ok", "model": name, "tasks": TASKS[name]}
    requirements = (exports["videomae"].out / "requirements.txt").read_text()
    assert "\nav==" in requirements and "\nav==" not in (exports["vit"].out / "requirements.txt").read_text()
    assert "\nJinja2==" in (exports["llava"].out / "requirements.txt").read_text()


def test_image_classification_as_corral(exports: dict[str, Export]) -> None:
    item = exports["vit"]
    images = [png(), png(64, 30, (10, 90, 160))]
    one = item.post(content=images[0], headers=PNG).json()
    same(one, corral_hf(item.model, "image-classification", images[0]))
    assert [x["label"] for x in one] and sorted(x["label"] for x in one) == ["bird", "cat", "dog"]
    assert sum(x["score"] for x in one) == pytest.approx(1.0, abs=1e-5)
    body = {"inputs": [b64(images[0]), data_url(images[1])], "parameters": {"top_k": 2}}
    two = item.post(body).json()
    same(two, corral_hf(item.model, "image-classification", body["inputs"], body["parameters"]))
    assert [len(x) for x in two] == [2, 2]
    same(two[0], one[:2])
    bad_top = item.post({"inputs": b64(images[0]), "parameters": {"top_k": 0}})
    assert bad_top.status_code == 400 and bad_top.json()["error"]["param"] == "parameters.top_k"
    huge = item.post(content=huge_png_header(), headers=PNG)  # refused from its header, as corral does
    assert huge.status_code == 413 and "50000000 pixels; the limit is 40000000" in huge.json()["error"]["message"]
    assert item.post({"messages": []}, route="/v1/chat/completions").status_code == 404  # routes: HF's only
    refuses_what_is_not_media(item)


def test_object_detection_as_corral(exports: dict[str, Export]) -> None:
    item = exports["detr"]
    image = png(72, 52)
    body = {"inputs": b64(image), "parameters": {"threshold": 0.0}}
    found = item.post(body).json()
    same(found, corral_hf(item.model, "object-detection", image, {"threshold": 0.0}))
    assert len(found) == 5  # every query of the tiny DETR at threshold 0
    for d in found:
        box = d["box"]
        assert d["label"] in ("cat", "dog") and 0 <= box["xmin"] <= box["xmax"] <= 72
        assert 0 <= box["ymin"] <= box["ymax"] <= 52
    pair = [b64(image), b64(png(40, 60))]  # padded together in one forward pass, as corral batches them
    same(item.post({"inputs": pair, "parameters": {"threshold": 0.0}}).json(),
         corral_hf(item.model, "object-detection", pair, {"threshold": 0.0}))
    refuses_what_is_not_media(item)


def masks_are_pngs_of(found: list[dict[str, Any]], size: tuple[int, int]) -> None:
    from PIL import Image

    for segment in found:
        mask = Image.open(io.BytesIO(base64.b64decode(segment["mask"])))
        assert mask.size == size and mask.mode == "L" and set(mask.get_flattened_data()) <= {0, 255}


def test_semantic_segmentation_as_corral(exports: dict[str, Export]) -> None:
    item = exports["segformer"]
    image = png(60, 44)
    found = item.post(content=image, headers=PNG).json()
    same(found, corral_hf(item.model, "image-segmentation", image))
    assert found and {s["label"] for s in found} <= {"sky", "tree", "road"}
    masks_are_pngs_of(found, (60, 44))
    wrong = item.post({"inputs": b64(image), "parameters": {"subtask": "panoptic"}})
    assert wrong.status_code == 400 and "semantic" in wrong.json()["error"]["message"]
    refuses_what_is_not_media(item)


@pytest.mark.parametrize("name", ["mask2former", "detr_panoptic"])
def test_universal_segmentation_as_corral(exports: dict[str, Export], name: str) -> None:
    item = exports[name]
    images = [png(70, 50), png(50, 90, (20, 160, 60))]  # inputs of different shapes: separate forward passes
    subtasks = ("panoptic", "instance", "semantic") if name == "mask2former" else ("panoptic", "instance")
    for subtask in (None, *subtasks):
        parameters = {"threshold": 0.3, **({"subtask": subtask} if subtask else {})}
        body = {"inputs": [b64(i) for i in images], "parameters": parameters}
        found = item.post(body).json()
        same(found, corral_hf(item.model, "image-segmentation", body["inputs"], parameters))
        assert all(found), subtask  # the tiny heads are made decisive: segments to compare
        masks_are_pngs_of(found[0], (70, 50))
        masks_are_pngs_of(found[1], (50, 90))
    if name == "mask2former":
        refuses_what_is_not_media(item)


def test_image_to_text_as_corral(exports: dict[str, Export]) -> None:
    item = exports["captioner"]
    image = png(40, 30)
    greedy = item.post({"inputs": b64(image), "parameters": {"generate_parameters": {"max_new_tokens": 6}}}).json()
    same(greedy, corral_hf(item.model, "image-to-text", image, {"generate_parameters": {"max_new_tokens": 6}}))
    assert list(greedy) == [{"generated_text": greedy[0]["generated_text"]}] and greedy[0]["generated_text"]
    whole = item.post(content=image, headers=PNG).json()  # 256 new tokens, capped by the decoder's 64 positions
    same(whole, corral_hf(item.model, "image-to-text", image))
    sampled = {"generate_parameters": {"do_sample": True, "temperature": 1.3, "top_p": 0.9, "seed": 11,
                                       "max_new_tokens": 12}}
    ours = item.post({"inputs": [b64(image), b64(png())], "parameters": sampled}).json()
    same(ours, corral_hf(item.model, "image-to-text", [b64(image), b64(png())], sampled))
    assert ours[0][0]["generated_text"] != greedy[0]["generated_text"]
    bad = item.post({"inputs": b64(image), "parameters": {"generate_parameters": {"temperature": 9}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "parameters"
    refuses_what_is_not_media(item)


def corral_chat(model: Path, body: dict[str, Any]) -> dict[str, Any]:
    from corral.protocols.openai.chat import start_chat
    from corral.protocols.openai.schemas import ChatCompletionBody

    async def work(runtime: Any, call: CallInfo) -> dict[str, Any]:
        run = await start_chat(runtime, ChatCompletionBody.model_validate({**body, "model": model.name}), call)
        answer: dict[str, Any] = await run.response()
        return answer

    answer: dict[str, Any] = corral(model, work)
    return answer


def sse_text(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    chunks = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]), chunks


@pytest.mark.parametrize("name", ["llava", "idefics3"])
def test_image_text_chat_as_corral(exports: dict[str, Export], name: str) -> None:
    item = exports[name]
    image = png(56, 44)
    described = item.post({"inputs": b64(image), "parameters": {"generate_parameters": {"max_new_tokens": 8}}})
    same(described.json(), corral_hf(item.model, "image-to-text", image,
                                     {"generate_parameters": {"max_new_tokens": 8}}))
    chats = [
        {"messages": [{"role": "system", "content": "You see images."},
                      {"role": "user", "content": [{"type": "text", "text": "What is here?"},
                                                   {"type": "image_url", "image_url": {"url": data_url(image)}}]}],
         "temperature": 0, "max_tokens": 8},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": data_url(png())},
                                                   {"type": "text", "text": "and this?"}]}],
         "temperature": 0.9, "top_p": 0.8, "seed": 5, "max_completion_tokens": 10},
        {"messages": [{"role": "user", "content": "No image, only text."}], "temperature": 0, "max_tokens": 6},
    ]
    answers = []
    for body in chats:
        ours = item.post(body, route="/v1/chat/completions").json()
        theirs = corral_chat(item.model, body)
        assert ours["object"] == "chat.completion" and ours["model"] == name
        assert ours["choices"][0]["message"] == theirs["choices"][0]["message"]
        assert ours["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"]
        assert ours["usage"] == theirs["usage"]
        answers.append(ours["choices"][0]["message"]["content"])
    first = answers[0]
    stop = first[len(first) // 2:len(first) // 2 + 2]  # a stop sequence inside the greedy answer
    cut = item.post({**chats[0], "stop": [stop]}, route="/v1/chat/completions").json()
    theirs = corral_chat(item.model, {**chats[0], "stop": [stop]})
    assert cut["choices"][0] == theirs["choices"][0] and cut["usage"] == theirs["usage"]
    assert cut["choices"][0]["finish_reason"] == "stop" and first.startswith(cut["choices"][0]["message"]["content"])
    streamed = item.post({**chats[0], "stream": True, "stream_options": {"include_usage": True}},
                         route="/v1/chat/completions")
    text, chunks = sse_text(streamed)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert text == item.post(chats[0], route="/v1/chat/completions").json()["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    remote = item.post({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}, route="/v1/chat/completions")
    assert remote.status_code == 400 and "remote" in remote.json()["error"]["message"]
    broken = item.post({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(NOT_AN_IMAGE)}}]}]},
        route="/v1/chat/completions")
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_image"
    refuses_what_is_not_media(item)


def test_video_classification_as_corral(exports: dict[str, Export]) -> None:
    item = exports["videomae"]
    clip, other = colour_mp4(), colour_mp4(frames=3, size=48)  # a short clip repeats frames
    one = item.post(content=clip, headers={"Content-Type": "video/mp4"}).json()
    same(one, corral_hf(item.model, "video-classification", clip))
    assert sorted(x["label"] for x in one) == ["jumping", "running", "walking"]
    body = {"inputs": [b64(clip), "data:video/mp4;base64," + b64(other)], "parameters": {"top_k": 1}}
    two = item.post(body).json()
    same(two, corral_hf(item.model, "video-classification", body["inputs"], {"top_k": 1}))
    assert [len(x) for x in two] == [1, 1]
    refuses_what_is_not_media(item, "video")
