"""Instance and panoptic segmentation (segment_image with a subtask) on tiny random-weight Mask2Former
and DETR panoptic models built from configs with their PIL image processors: inspection maps them to
segment_image; every subtask's segments equal the processor's own post-processing of the model's
outputs (labels from id2label, scores, masks of the input image's size); concurrent requests equal
solo ones; the thresholds reach the post-processing; a semantic-only model refuses another subtask
with a 400 naming what it does; the CLI (-o DIR), the sidecar and the Hugging Face task API (the
real InferenceClient, with subtask and thresholds as parameters)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import run_cli
from tests.fixtures.tiny_media import build_segformer
from tests.fixtures.tiny_models import TinyModel
from tests.fixtures.tiny_segmenters import LABELS, build_detr_panoptic, build_mask2former
from tests.tasks.test_vision import png, runtime_with

from corral.errors import MissingDependencyError, UnsupportedTaskError
from corral.media import decode_image
from corral.models.inspect import inspect_path
from corral.runtime.dispatcher import CallInfo, Door
from corral.sidecar.client import SidecarClient
from corral.tasks import Segment, SegmentImageRequest, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CALL = CallInfo(Door.CLI, "test")
SIZES = ((60, 44), (44, 60), (48, 40))  # two input shapes after the processor's resize and padding
Expected = list[tuple[str, float, Any]]  # (label, score, boolean mask) per segment


@pytest.fixture(scope="module")
def mask2former(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mask2former(tmp_path_factory.mktemp("m2f")).path


def images() -> list[Any]:
    return [decode_image(png(w, h, (40 * i, 120, 60))) for i, (w, h) in enumerate(SIZES)]


def by_hand(model: Any, processor: Any, image: Any, subtask: str, threshold: float) -> Expected:
    """The segments of one image, straight from transformers: the model on this image alone, the
    processor's post-processing, masks as ``segmentation == id``; semantic scores are the label's
    share of the per-pixel scores, averaged over its pixels."""
    import torch

    size = [(image.height, image.width)]
    with torch.inference_mode():
        outputs = model(**processor([image], return_tensors="pt"))
        if subtask == "semantic":
            result = processor.post_process_semantic_segmentation(outputs, target_sizes=size,
                                                                  return_segmentation_scores=True)[0]
            share = result.segmentation_scores / result.segmentation_scores.sum(dim=0)
            return [(model.config.id2label[i], float(share[i][result.segmentation == i].mean()),
                     (result.segmentation == i).numpy()) for i in result.segmentation.unique().tolist()]
        result = getattr(processor, f"post_process_{subtask}_segmentation")(
            outputs, threshold=threshold, mask_threshold=0.5, overlap_mask_area_threshold=0.5, target_sizes=size)[0]
    return [(model.config.id2label[info["label_id"]], info["score"], (result["segmentation"] == info["id"]).numpy())
            for info in result["segments_info"] if bool((result["segmentation"] == info["id"]).any())]


def as_arrays(segments: list[Segment], image: Any) -> Expected:
    """A result's segments with their PNG masks decoded (checked: mode L, the image's size, 0/255)."""
    from PIL import Image

    out = []
    for s in segments:
        mask = Image.open(io.BytesIO(s.mask))
        assert mask.mode == "L" and mask.size == (image.width, image.height)
        pixels = np.asarray(mask)
        assert set(np.unique(pixels).tolist()) <= {0, 255}
        out.append((s.label, s.score, pixels == 255))
    return out


def _by_mask(segment: tuple[str, float, Any]) -> tuple[bytes, str]:
    return segment[2].tobytes(), segment[0]  # segments of one image never share their pixels


def assert_same(got: Expected, expected: Expected) -> None:
    """The same segments: labels, masks pixel for pixel, scores within 1e-5 (in any order)."""
    got, expected = sorted(got, key=_by_mask), sorted(expected, key=_by_mask)
    assert [s[0] for s in got] == [s[0] for s in expected]
    assert [s[1] for s in got] == pytest.approx([s[1] for s in expected], abs=1e-5)
    assert all(np.array_equal(g[2], e[2]) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("build", [build_mask2former, build_detr_panoptic], ids=["mask2former", "detr"])
def test_segments_equal_the_processors_post_processing(build: Callable[[Path], TinyModel], tmp_path: Path) -> None:
    import transformers

    tiny = build(tmp_path / "model")
    info = inspect_path(tiny.path)
    assert info.tasks == ["segment_image"] and info.engine == "transformers"
    pictures = images()
    runtime = runtime_with({"m": tiny.path})
    asks = [("panoptic", 0.0), ("instance", 0.0), ("instance", 0.5), ("semantic", 0.9)]

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        async with runtime:
            default = [await runtime.call(Task.SEGMENT_IMAGE, "m", SegmentImageRequest((i,), threshold=0.0), CALL)
                       for i in pictures]
            alone = [[await runtime.call(Task.SEGMENT_IMAGE, "m", SegmentImageRequest((i,), sub, th), CALL)
                      for i in pictures] for sub, th in asks]
            together = [await asyncio.gather(*(runtime.call(Task.SEGMENT_IMAGE, "m",
                                                            SegmentImageRequest((i,), sub, th), CALL)
                                               for i in pictures)) for sub, th in asks]
            return default, alone, together

    default, alone, together = asyncio.run(scenario())
    model = getattr(transformers, tiny.architecture).from_pretrained(str(tiny.path)).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(str(tiny.path))
    for (subtask, threshold), solo, batched in zip(asks, alone, together, strict=True):
        for image, one, shared in zip(pictures, solo, batched, strict=True):
            got = as_arrays(one.segments[0], image)
            assert got or (subtask, threshold) == ("instance", 0.5)  # only a threshold may leave none
            assert {label for label, _, _ in got} <= set(LABELS)
            assert_same(got, by_hand(model, processor, image, subtask, threshold))
            assert_same(as_arrays(shared.segments[0], image), got)  # batched equals solo
            if subtask == "semantic":
                assert sum(int(mask.sum()) for _, _, mask in got) == image.width * image.height  # a partition
            else:
                assert [s for _, s, _ in got] == sorted((s for _, s, _ in got), reverse=True)  # best first
    for own, panoptic, image in zip(default, alone[0], pictures, strict=True):  # a universal head: panoptic
        assert_same(as_arrays(own.segments[0], image), as_arrays(panoptic.segments[0], image))
    if build is build_mask2former:  # the threshold reaches the post-processing
        assert all(len(low.segments[0]) > len(high.segments[0]) for low, high in zip(alone[1], alone[2], strict=True))


def test_a_semantic_model_refuses_other_subtasks(tmp_path: Path) -> None:
    runtime = runtime_with({"seg": build_segformer(tmp_path / "seg").path})
    image = decode_image(png(60, 44))

    async def scenario() -> tuple[list[Segment], list[Segment]]:
        async with runtime:
            own = await runtime.call(Task.SEGMENT_IMAGE, "seg", SegmentImageRequest((image,)), CALL)
            semantic = await runtime.call(Task.SEGMENT_IMAGE, "seg", SegmentImageRequest((image,), "semantic"), CALL)
            with pytest.raises(UnsupportedTaskError) as caught:
                await runtime.call(Task.SEGMENT_IMAGE, "seg", SegmentImageRequest((image,), "instance"), CALL)
            assert caught.value.http_status == 400
            assert "instance" in caught.value.message and caught.value.hint == "it does: semantic"
            return own.segments[0], semantic.segments[0]

    own, semantic = asyncio.run(scenario())
    assert own and own == semantic


def test_cli_writes_masks(mask2former: Path, tmp_path: Path) -> None:
    from PIL import Image

    assert run_cli("pull", str(mask2former), "--name", "m2f").returncode == 0
    (tmp_path / "in.png").write_bytes(png(60, 44))
    r = run_cli("run", "m2f", str(tmp_path / "in.png"), "--subtask", "instance", "--threshold", "0.1",
                "-o", str(tmp_path / "masks"), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and all(row["label"] in LABELS and 0.1 <= row["score"] <= 1 for row in rows)
    written = [Path(row["mask"]) for row in rows]
    assert sorted(written) == sorted((tmp_path / "masks").iterdir())
    assert all(Image.open(p).size == (60, 44) and Image.open(p).mode == "L" for p in written)
    strict = run_cli("run", "m2f", str(tmp_path / "in.png"), "--subtask", "instance", "--threshold", "0.99", "--json")
    assert strict.returncode == 0 and json.loads(strict.stdout) == []  # no random query scores 0.99
    bad = run_cli("run", "m2f", str(tmp_path / "in.png"), "--mask-threshold", "2")
    assert bad.returncode == 2 and "--mask-threshold must be from 0 to 1" in bad.stderr
    with SidecarClient() as client:
        got = client.call("segment_image", {"model": "m2f", "inputs": base64.b64encode(png(60, 44)).decode(),
                                            "parameters": {"subtask": "instance", "threshold": 0.1}})
    assert [(x["label"], x["score"]) for x in got] == [(row["label"], row["score"]) for row in rows]


def test_hugging_face_door(mask2former: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient
    from tests.server.conftest import Server

    srv = Server(tmp_path / "served", register={"m2f": mask2former, "seg": build_segformer(tmp_path / "seg").path})
    try:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        client = InferenceClient(model=f"{srv.url}/models/m2f")
        panoptic = client.image_segmentation(png(), threshold=0.0)
        instance = client.image_segmentation(png(), subtask="instance", threshold=0.0, mask_threshold=0.5,
                                             overlap_mask_area_threshold=0.5)
        few = client.image_segmentation(png(), subtask="instance", threshold=0.5)
        for found in (panoptic, instance, few):
            assert found and all(x.label in LABELS and x.mask.size == (48, 40) for x in found)
        assert len(few) < len(instance)
        assert sum(np.asarray(x.mask).astype(bool).sum() for x in panoptic) <= 48 * 40  # panoptic: no overlap
        body = {"inputs": base64.b64encode(png()).decode(), "parameters": {"subtask": "instance"}}
        refused = httpx.post(f"{srv.url}/models/seg", json=body, timeout=60)
        assert refused.status_code == 400 and "it does: semantic" in refused.json()["error"]["message"]
        wrong = httpx.post(f"{srv.url}/models/m2f", json={**body, "parameters": {"subtask": "everything"}})
        assert wrong.status_code == 422 and "semantic, instance, panoptic" in wrong.json()["error"]["message"]
    finally:
        srv.stop()


def test_a_timm_backbone_is_named_not_crashed_on(tmp_path: Path) -> None:
    """A DETR whose backbone is a timm model (as on the Hub): inspection says so, and loading it
    without timm is a 503 naming timm, not a crash."""
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed here")
    folder = build_detr_panoptic(tmp_path / "detr").path
    config = json.loads((folder / "config.json").read_text())
    del config["backbone_config"]
    (folder / "config.json").write_text(json.dumps({**config, "use_timm_backbone": True}))
    assert any("timm" in note for note in inspect_path(folder).notes)
    assert not any("timm" in note for note in inspect_path(build_mask2former(tmp_path / "m2f").path).notes)
    runtime = runtime_with({"detr": folder})

    async def scenario() -> None:
        async with runtime:
            await runtime.call(Task.SEGMENT_IMAGE, "detr", SegmentImageRequest((decode_image(png()),)), CALL)

    with pytest.raises(MissingDependencyError, match="timm") as caught:
        asyncio.run(scenario())
    assert caught.value.http_status == 503
