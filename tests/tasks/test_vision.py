"""classify_image and detect_objects on tiny random-weight ViT and DETR models built from configs, with
their PIL image processors: scores and boxes as transformers computes them, batched requests equal to
alone, boxes inside the image; every kind of bad image refused with its status before any model runs
(not an image, truncated, too many pixels, a body over the limit); the CLI, the sidecar and the Hugging
Face task API (the real InferenceClient); and the memory budget evicting across modalities."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_media import build_detr, build_segformer, build_vit
from tests.fixtures.tiny_models import build_bert_classifier

from corral.errors import UnsupportedTaskError
from corral.media import BadMediaError, MediaTooLargeError, decode_image
from corral.runtime.dispatcher import CallInfo, Door
from corral.sidecar.client import SidecarClient, SidecarError
from corral.tasks import ClassifyImageRequest, ClassifyTextRequest, DetectObjectsRequest, SegmentImageRequest, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CALL = CallInfo(Door.CLI, "test")


def png(width: int = 48, height: int = 40, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(image).rectangle((5, 5, width // 2, height // 2), fill=(10, 200, 10))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_vit(tmp_path_factory.mktemp("vit")).path


@pytest.fixture(scope="module")
def detr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_detr(tmp_path_factory.mktemp("detr")).path


def test_bad_images_are_refused_with_their_reason() -> None:
    good = png()
    assert decode_image(good).size == (48, 40)
    for data, words in ((b"", "empty"), (b"GIF89a not really", "not an image"), (good[: len(good) // 2], "truncated")):
        with pytest.raises(BadMediaError, match=words):
            decode_image(data)
    with pytest.raises(MediaTooLargeError, match="48x40 = 1920 pixels; the limit is 1000"):
        decode_image(good, max_pixels=1000)


def test_scores_and_boxes_as_transformers_computes_them(vit: Path, detr: Path) -> None:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    images = [decode_image(png(40 + 8 * i, 32 + 4 * i, (20 * i, 100, 50))) for i in range(5)]
    runtime = runtime_with({"vit": vit, "detr": detr})

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        async with runtime:
            alone = [await runtime.call(Task.CLASSIFY_IMAGE, "vit", ClassifyImageRequest((i,)), CALL) for i in images]
            together = await asyncio.gather(*(runtime.call(Task.CLASSIFY_IMAGE, "vit", ClassifyImageRequest((i,)),
                                                           CALL) for i in images))
            boxes = await asyncio.gather(*(runtime.call(Task.DETECT_OBJECTS, "detr", DetectObjectsRequest((i,), 0.0),
                                                        CALL) for i in images))
            with pytest.raises(UnsupportedTaskError, match="own labels only") as labelled:  # zero-shot: CLIP's
                await runtime.call(Task.CLASSIFY_IMAGE, "vit", ClassifyImageRequest((images[0],), ("cat", "fish")),
                                   CALL)
            assert labelled.value.http_status == 400
            return alone, list(together), list(boxes)

    alone, together, boxes = asyncio.run(scenario())
    processor = AutoImageProcessor.from_pretrained(str(vit))
    model = AutoModelForImageClassification.from_pretrained(str(vit)).eval()
    with torch.inference_mode():
        probs = torch.softmax(model(**processor(images, return_tensors="pt")).logits, dim=-1)
    for i, (one, shared) in enumerate(zip(alone, together, strict=True)):
        assert dict(one.labels[0]) == pytest.approx(dict(zip(("cat", "dog", "bird"), probs[i].tolist(),
                                                             strict=True)), abs=1e-5)
        assert [x for x, _ in shared.labels[0]] == [x for x, _ in one.labels[0]]
    for image, found in zip(images, boxes, strict=True):
        assert len(found.detections[0]) == 5  # threshold 0: every query of the tiny DETR
        for d in found.detections[0]:
            xmin, ymin, xmax, ymax = d.box
            assert d.label in ("cat", "dog") and 0 <= d.score <= 1
            assert 0 <= xmin <= xmax <= image.width and 0 <= ymin <= ymax <= image.height


def test_segmentation_masks_cover_the_image(tmp_path: Path) -> None:
    from PIL import Image

    segformer = build_segformer(tmp_path / "seg").path
    image = decode_image(png(60, 44))
    runtime = runtime_with({"seg": segformer})

    async def scenario() -> Any:
        async with runtime:
            return await runtime.call(Task.SEGMENT_IMAGE, "seg", SegmentImageRequest((image,)), CALL)

    segments = asyncio.run(scenario()).segments[0]
    assert segments and {s.label for s in segments} <= {"sky", "tree", "road"}
    masks = [Image.open(io.BytesIO(s.mask)) for s in segments]
    assert all(m.size == (60, 44) and m.mode == "L" for m in masks)
    covered = [m.histogram()[255] for m in masks]
    assert sum(covered) == 60 * 44 and covered == sorted(covered, reverse=True)  # a partition, largest first
    assert all(0 < s.score <= 1 for s in segments)
    r = run_cli("pull", str(segformer), "--name", "seg")
    assert r.returncode == 0
    (tmp_path / "in.png").write_bytes(png(60, 44))
    out = run_cli("run", "seg", str(tmp_path / "in.png"), "-o", str(tmp_path / "masks"), "--json")
    assert out.returncode == 0, out.stderr
    written = [Path(x["mask"]) for x in json.loads(out.stdout)]
    assert written and all(p.is_file() and p.parent == tmp_path / "masks" for p in written)


def test_budget_evicts_across_modalities(vit: Path, tmp_path: Path) -> None:
    text = build_bert_classifier(tmp_path / "cls").path
    runtime = runtime_with({"vit": vit, "cls": text})
    image = decode_image(png())

    async def scenario() -> list[str]:
        async with runtime:
            await runtime.call(Task.CLASSIFY_IMAGE, "vit", ClassifyImageRequest((image,)), CALL)
            registry = runtime.registry
            need_text = registry.need_for(await registry.resolve("cls"))[0]
            # room for either model, not both: the image model's share plus the text model's is too much
            registry.budget_bytes = max(registry.resident_bytes(), need_text) + min(registry.resident_bytes(),
                                                                                     need_text) // 2
            await runtime.call(Task.CLASSIFY_TEXT, "cls", ClassifyTextRequest(("a text",)), CALL)
            return sorted(runtime.registry.models)

    assert asyncio.run(scenario()) == ["cls"]  # the image model, used least recently, was unloaded


def test_doors(vit: Path, detr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server.conftest import Server

    image_file = tmp_path / "photo.png"
    image_file.write_bytes(png())
    assert run_cli("pull", str(vit), "--name", "vit").returncode == 0
    r = run_cli("run", "vit", str(image_file), "--json", "--top-k", "2")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 2
    bad = run_cli("run", "vit", str(tmp_path / "missing.png"))
    assert bad.returncode == 2 and "no such image file" in bad.stderr
    with SidecarClient() as client:
        got = client.call("classify_image", {"model": "vit", "inputs": base64.b64encode(png()).decode()})
        assert sorted(x["label"] for x in got) == ["bird", "cat", "dog"]
        with pytest.raises(SidecarError) as caught:
            client.call("classify_image", {"model": "vit", "inputs": base64.b64encode(b"nope").decode()})
        assert caught.value.data["status"] == 400
    srv = Server(tmp_path / "served", "--max-image-pixels", "5000", "--max-body", "65536",
                 register={"vit": vit, "detr": detr, "seg": build_segformer(tmp_path / "seg").path})
    try:
        _http_door(srv, monkeypatch)
    finally:
        srv.stop()


def _http_door(srv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    labels = InferenceClient(model=f"{srv.url}/models/vit").image_classification(png())  # raw bytes body
    assert sorted(x.label for x in labels) == ["bird", "cat", "dog"]
    found = InferenceClient(model=f"{srv.url}/models/detr").object_detection(png(), threshold=0.0)  # JSON, base64
    assert len(found) == 5 and all(0 <= x.box.xmin <= x.box.xmax <= 48 for x in found)
    segments = InferenceClient(model=f"{srv.url}/models/seg").image_segmentation(png())
    assert segments and all(x.mask.size == (48, 40) for x in segments)  # the client decodes each PNG mask
    cases = [(httpx.post(f"{srv.url}/models/vit", content=b"not an image"), 400, "not an image"),
             (httpx.post(f"{srv.url}/models/vit", content=png(100, 100)), 413, "limit is 5000"),
             (httpx.post(f"{srv.url}/models/vit", content=b"x" * 70000), 413, "limit is 65536"),
             (httpx.post(f"{srv.url}/models/vit", json={"inputs": "https://example.com/cat.jpg"}), 400, "URL")]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]
    assert httpx.post(f"{srv.url}/models/vit", content=png()).status_code == 200  # still serving
