"""generate_image on a tiny random-weight StableDiffusionPipeline built from configs: PNGs of the
requested size, equal to the pipeline called by hand with the same generator and steps, the same
seed making the same images, n images seeded seed, seed + 1, ...; a step of progress per diffusion
step; closing the stream stopping the loop early (logged 499); through the CLI (Ctrl-C at a
terminal stops the run), the OpenAI SDK (client.images.generate; a client that disconnects stops
the loop), the Hugging Face InferenceClient and the sidecar (progress notifications, cancel); and
each bad input refused before a good request is served."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_media import build_stable_diffusion

from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.requestlog import latest
from corral.sidecar.client import SidecarClient, SidecarError
from corral.tasks import GenerateImageRequest, GenerateImageResult, Progress, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
CALL = CallInfo(Door.CLI, "test")
STEP_LINE = re.compile(r"generate_image \S+: step (\d+)/(\d+)")


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stable_diffusion(tmp_path_factory.mktemp("sd")).path


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def by_hand(path: Path, prompt: str, width: int, height: int, steps: int, seed: int) -> tuple[Any, int]:
    """The pipeline called directly with one CPU generator: (its image, the steps its loop ran)."""
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(path), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    ran: list[int] = []

    def count(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        ran.append(i)
        return tensors

    image = pipe(prompt, width=width, height=height, num_inference_steps=steps, callback_on_step_end=count,
                 generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return image, len(ran)


async def chunks_of(runtime: Any, request: GenerateImageRequest) -> list[Any]:
    return [c async for c in runtime.run(Task.GENERATE_IMAGE, "sd", request, CALL)]


def test_images_as_the_pipeline_makes_them(sd: Path) -> None:
    runtime = runtime_with({"sd": sd})
    one = GenerateImageRequest("a red bicycle", width=32, height=24, steps=2, seed=7)

    async def scenario() -> list[list[Any]]:
        async with runtime:
            return [await chunks_of(runtime, one), await chunks_of(runtime, one),
                    await chunks_of(runtime, GenerateImageRequest("a red bicycle", width=32, height=24, n=3, steps=2,
                                                                  seed=7)),
                    await chunks_of(runtime, GenerateImageRequest("a red bicycle", width=32, height=24, steps=2,
                                                                  seed=8)),
                    await chunks_of(runtime, GenerateImageRequest("a red bicycle", width=32, height=24, steps=2))]

    first, again, three, eight, unseeded = asyncio.run(scenario())
    expected, loop_steps = by_hand(sd, "a red bicycle", 32, 24, 2, 7)
    progress, result = first[:-1], first[-1]
    assert isinstance(result, GenerateImageResult) and result.seed == 7
    assert [(p.step, p.steps) for p in progress] == [(i, loop_steps) for i in range(1, loop_steps + 1)]
    assert all(isinstance(p, Progress) for p in progress) and result.usage.completion_tokens == loop_steps
    assert result.images[0].size == (32, 24)
    assert np.array_equal(pixels(result.images[0]), pixels(expected))  # the pipeline's own image
    assert np.array_equal(pixels(again[-1].images[0]), pixels(result.images[0]))  # same seed, same image
    batch = three[-1]
    assert len(batch.images) == 3 and batch.seed == 7 and all(i.size == (32, 24) for i in batch.images)
    # image k of a batch is seeded seed + k: image 0 is seed 7's, image 1 seed 8's (a batched UNet may round apart)
    assert np.abs(pixels(batch.images[0]) - pixels(result.images[0])).max() <= 2
    assert np.abs(pixels(batch.images[1]) - pixels(eight[-1].images[0])).max() <= 2
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))
    drawn = unseeded[-1]
    assert drawn.seed is not None  # a seed was drawn, and is reported so the image can be made again


def test_closing_the_stream_stops_the_loop(sd: Path, corral_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="corral.engines.diffusers")
    runtime = runtime_with({"sd": sd})
    asked = 200

    async def scenario() -> tuple[list[Any], int]:
        async with runtime:
            stream = runtime.run(Task.GENERATE_IMAGE, "sd", GenerateImageRequest("a cat", width=16, height=16,
                                                                                 steps=asked, seed=1), CALL)
            seen = []
            async for chunk in stream:
                seen.append(chunk)
                if len(seen) == 2:
                    break
            await stream.aclose()  # returns once the engine thread has stopped
            return seen, runtime.status().models[0].in_flight

    seen, in_flight = asyncio.run(scenario())
    assert [type(c) for c in seen] == [Progress, Progress] and in_flight == 0
    ran = [int(m.group(1)) for r in caplog.records if (m := STEP_LINE.search(r.getMessage()))]
    assert 2 <= len(ran) < asked // 4  # the loop stopped at a next step, far from the end
    row = latest(corral_home / "requests.db", 1)[0]
    assert (row["task"], row["status"], row["completion_tokens"]) == ("generate_image", 499, 2)


def test_cli_writes_pngs_and_ctrl_c_stops(sd: Path, tmp_path: Path) -> None:
    import pexpect
    from PIL import Image

    assert run_cli("pull", str(sd), "--name", "sd").returncode == 0
    out = run_cli("run", "sd", "a red bicycle", "-o", str(tmp_path / "bike.png"), "--steps", "2", "--seed", "1",
                  "--size", "32x24", "--n", "2", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["files"] == [str(tmp_path / "bike-1.png"), str(tmp_path / "bike-2.png")] and got["seed"] == 1
    assert all(Image.open(f).size == (32, 24) for f in got["files"])
    bad = run_cli("run", "sd", "x", "-o", str(tmp_path / "x.png"), "--size", "4096x4096")
    assert bad.returncode == 2 and "at most 4194304 pixels" in bad.stderr
    child = pexpect.spawn(sys.executable, ["-m", "corral", "run", "sd", "a long one", "-o", str(tmp_path / "c.png"),
                                           "--steps", "500", "--size", "16x16"], env=dict(os.environ),
                          encoding="utf-8", timeout=240, dimensions=(40, 200))
    child.expect(r"generate_image step 2/501")  # the progress line, drawn at a terminal
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130 and not (tmp_path / "c.png").exists()
    stopped = json.loads(run_cli("logs", "--json").stdout)[0]
    assert (stopped["door"], stopped["task"], stopped["status"]) == ("cli", "generate_image", 499)
    assert 2 <= stopped["completion_tokens"] < 250


def test_doors_and_bad_input(sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server.conftest import Server

    srv = Server(tmp_path / "served", "--log-level", "debug", "--max-images", "4", register={"sd": sd})
    try:
        _openai(srv)
        _progress_lines(srv)
        _disconnect_stops_the_loop(srv)
        _hugging_face(srv, monkeypatch)
    finally:
        srv.stop()
    steps = [m.groups() for m in STEP_LINE.finditer(srv.log.read_text())]
    assert steps and all(int(a) <= int(b) for a, b in steps)  # the server's debug line per step


def _openai(srv: Any) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused")
    made = client.images.generate(model="sd", prompt="a red bicycle", size="32x24", n=2,  # type: ignore[arg-type]
                                  response_format="b64_json", extra_body={"seed": 1, "steps": 2})
    assert made.data and len(made.data) == 2 and made.size == "32x24"
    images = [_decode(d.b64_json) for d in made.data]
    assert all(i.size == (32, 24) and i.format == "PNG" for i in images)
    assert (made.model_extra or {})["seed"] == 1
    again = client.images.generate(model="sd", prompt="a red bicycle", size="32x24", n=2,  # type: ignore[arg-type]
                                   extra_body={"seed": 1, "steps": 2})
    assert [d.b64_json for d in again.data or []] == [d.b64_json for d in made.data]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"size": "33x32"}, 422, "multiples of 8"),
        ({"size": "4096x4096"}, 422, "at most 4194304 pixels"),
        ({"size": "big"}, 422, "WIDTHxHEIGHT"),
        ({"n": 5}, 422, "from 1 to 4 images"),
        ({"response_format": "url"}, 400, "does not host"),
        ({"model": "nope"}, 404, "nope"),
        ({"steps": 0}, 422, "steps must be"),
    ]
    for change, status, words in cases:
        body = {"model": "sd", "prompt": "a cat", "size": "16x16", "steps": 1, **change}
        r = httpx.post(f"{srv.url}/v1/images/generations", json=body, timeout=120)
        assert r.status_code == status, (change, r.text)
        assert words in r.json()["error"]["message"]
    ok = httpx.post(f"{srv.url}/v1/images/generations", json={"model": "sd", "prompt": "a cat", "size": "16x16",
                                                               "steps": 1}, timeout=120)
    assert ok.status_code == 200 and _decode(ok.json()["data"][0]["b64_json"]).size == (16, 16)  # still serving


def _progress_lines(srv: Any) -> None:
    """The web UI's route: each step as an NDJSON line, then OpenAI's answer; errors as a line."""
    import json

    body = {"model": "sd", "prompt": "a red bicycle", "size": "32x24", "seed": 1, "steps": 3}
    lines = [json.loads(x) for x in httpx.post(f"{srv.url}/api/images/generations", json=body,
                                               timeout=120).text.splitlines()]
    steps = [(x["step"], x["steps"]) for x in lines if x["status"] == "step"]
    total = steps[-1][1]  # the scheduler's own count for 3 requested steps (PNDM adds a warm-up step)
    assert total >= 3 and steps == [(i, total) for i in range(1, total + 1)]
    done = lines[-1]
    assert done["status"] == "done" and done["seed"] == 1 and _decode(done["data"][0]["b64_json"]).size == (32, 24)
    bad = httpx.post(f"{srv.url}/api/images/generations", json={**body, "n": 5}, timeout=120)
    assert bad.status_code == 422 and "from 1 to 4 images" in bad.json()["error"]["message"]  # before any stream
    for change, status in (({"model": "nope"}, 404), ({"size": "33x32"}, 422)):  # found out once it began
        late = httpx.post(f"{srv.url}/api/images/generations", json={**body, **change}, timeout=120).text
        assert json.loads(late.splitlines()[-1])["error"]["status"] == status


def _decode(b64: str | None) -> Any:
    from PIL import Image

    assert b64 is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def _disconnect_stops_the_loop(srv: Any) -> None:
    asked = 500
    body = {"model": "sd", "prompt": "a long one", "size": "16x16", "steps": asked, "seed": 2}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection mid-run
        httpx.post(f"{srv.url}/v1/images/generations", json=body, timeout=httpx.Timeout(60, read=3))
    deadline, gone = time.monotonic() + 120, []
    while not gone and time.monotonic() < deadline:
        rows = json.loads(run_cli("logs", "--json", "-n", "100", env={"CORRAL_HOME": str(srv.home)}).stdout)
        gone = [r for r in rows if r["status"] == 499]
        time.sleep(0.2)
    seen = [(r["route"], r["status"], r["error"]) for r in rows]
    assert len(gone) == 1 and sum(r["status"] == 200 for r in rows) >= 3, seen  # only the request that left: 499
    row = gone[0]
    assert row["route"] == "/v1/images/generations" and row["task"] == "generate_image"
    assert 0 < row["completion_tokens"] < asked  # the steps streamed before the loop stopped
    ran = [int(a) for a, b in (m.groups() for m in STEP_LINE.finditer(srv.log.read_text())) if int(b) == asked + 1]
    assert ran and max(ran) < asked  # the server's log: the pipeline stopped long before its last step
    ok = httpx.post(f"{srv.url}/v1/images/generations", json={**body, "steps": 1}, timeout=120)
    assert ok.status_code == 200  # the model's slot is free again


def _hugging_face(srv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    image = InferenceClient(model=f"{srv.url}/models/sd").text_to_image(
        "a red bicycle", width=32, height=24, num_inference_steps=2, seed=1)
    assert image.size == (32, 24)
    r = httpx.post(f"{srv.url}/models/sd", json={"inputs": "a cat", "parameters": {"width": 12, "height": 16}})
    assert r.status_code == 422 and "multiples of 8" in r.json()["error"]["message"]


def test_sidecar_progress_and_cancel(sd: Path) -> None:
    from PIL import Image

    assert run_cli("pull", str(sd), "--name", "sd").returncode == 0
    with SidecarClient() as client:
        steps: list[dict[str, Any]] = []
        got = client.call("generate_image", {"model": "sd", "prompt": "a red bicycle", "size": "32x24", "steps": 2,
                                             "seed": 1}, progress=steps.append)
        image = Image.open(io.BytesIO(base64.b64decode(got["data"][0]["b64_json"])))
        assert image.size == (32, 24) and got["seed"] == 1
        assert [s["progress"] for s in steps] == list(range(1, got["steps"] + 1))
        assert all(s["total"] == got["steps"] for s in steps)
        started: list[dict[str, Any]] = []
        call = client.start("generate_image", {"model": "sd", "prompt": "a long one", "size": "16x16",
                                               "steps": 500}, progress=started.append)
        deadline = time.monotonic() + 120
        while not started and time.monotonic() < deadline:
            time.sleep(0.05)
        call.cancel()
        with pytest.raises(SidecarError) as caught:
            call.result(120)
        assert caught.value.code == -32800
        with pytest.raises(SidecarError) as bad:
            client.call("generate_image", {"model": "sd", "prompt": "x", "n": 99})
        assert bad.value.data["status"] == 422
        assert client.call("generate_image", {"model": "sd", "prompt": "x", "size": "8x8", "steps": 1})["data"]
        rows = client.call("logs", {"limit": 4})["requests"]
    assert [r["status"] for r in rows[:3]] == [200, 499, 200]  # newest first; the refused n=99 ran nothing
    stopped = rows[1]
    assert stopped["task"] == "generate_image" and 0 < stopped["completion_tokens"] < 500


@pytest.mark.parametrize(("name", "tasks"), [
    ("StableDiffusionPipeline", ["generate_image"]), ("StableDiffusionXLPipeline", ["generate_image"]),
    ("FluxPipeline", ["generate_image"]), ("HunyuanDiTPipeline", ["generate_image"]),
    ("KandinskyV22CombinedPipeline", ["generate_image"]), ("Cosmos2TextToImagePipeline", ["generate_image"]),
    ("TextToVideoSDPipeline", ["generate_video"]), ("AnimateDiffPipeline", ["generate_video"]),
    ("WanPipeline", ["generate_video"]), ("LTXPipeline", ["generate_video"]), ("CogVideoXPipeline", ["generate_video"]),
    ("StableDiffusionImg2ImgPipeline", []), ("StableDiffusionInpaintPipeline", []), ("FluxFillPipeline", []),
    ("StableDiffusionControlNetPipeline", []), ("WanImageToVideoPipeline", []), ("StableVideoDiffusionPipeline", []),
    ("VideoToVideoSDPipeline", []), ("DDPMPipeline", []), ("DiTPipeline", []), ("KandinskyV22Pipeline", []),
    ("AudioLDMPipeline", []), ("KandinskyV22PriorPipeline", []),
])
def test_pipeline_classes_map_to_tasks(name: str, tasks: list[str]) -> None:
    from corral.models.detect import tasks_for_diffusers

    assert tasks_for_diffusers(name) == tasks


def test_size_multiples_from_the_pipeline() -> None:
    """Stand-ins with the public attributes of pipelines too large to build here (Flux packs 2x2 latents in
    its image processor's factor; SD3 and Wan patchify; Sana's VAE is 32x), and the tiny SD itself."""
    from types import SimpleNamespace as NS

    from corral.engines.diffusers.pipes import check_size, size_multiple
    from corral.errors import UsageError

    def config(**kw: Any) -> NS:
        return NS(config=NS(**kw))

    flux = NS(image_processor=config(vae_scale_factor=16), transformer=config(patch_size=1), vae_scale_factor=8)
    sd3 = NS(image_processor=config(vae_scale_factor=8), transformer=config(patch_size=2))
    wan = NS(video_processor=config(vae_scale_factor=8), transformer=config(patch_size=(1, 2, 2)))
    sana = NS(image_processor=config(vae_scale_factor=32), transformer=config(patch_size=1))
    sd_tiny = NS(image_processor=config(vae_scale_factor=1), unet=config(sample_size=8), vae_scale_factor=1)
    assert [size_multiple(p) for p in (flux, sd3, wan, sana, sd_tiny)] == [16, 16, 16, 32, 8]
    check_size(sd3, 1024, 768)
    with pytest.raises(UsageError, match=r"width 1000: .* multiples of 16") as caught:
        check_size(sd3, 1000, 768)
    assert caught.value.hint is not None and "x" in caught.value.hint


def test_size_multiples_from_the_folder(sd: Path, tmp_path: Path) -> None:
    """The multiple inspection reads from the part configs: the loaded pipeline's for the tiny SD; for the
    layouts of pipelines too large to build, what their pipelines compute (Flux packs latents 2x2 inside
    the pipeline: the folder says 8, an under-estimate the engine's own check still corrects)."""
    from corral.models.inspect import inspect_path, read_json
    from corral.models.pipeline_sizes import size_multiple

    assert inspect_path(sd).size_multiple == 8
    layouts = {"sd3": ({"block_out_channels": [128, 256, 512, 512]}, {"patch_size": 2}, 16),
               "wan": ({"scale_factor_spatial": 8, "base_dim": 96}, {"patch_size": [1, 2, 2]}, 16),
               "ltx": ({"spatial_compression_ratio": 32, "block_out_channels": [128] * 4}, {"patch_size": 1}, 32),
               "sana": ({"block_out_channels": [128, 256, 512, 512, 1024, 1024]}, {"patch_size": 1}, 32),
               "flux": ({"block_out_channels": [128, 256, 512, 512]}, {"patch_size": 1}, 8),
               "no-vae-facts": ({"latent_channels": 4}, None, None)}
    for name, (vae, transformer, expected) in layouts.items():
        root = tmp_path / name
        for part, config in (("vae", vae), ("transformer", transformer)):
            if config is not None:
                (root / part).mkdir(parents=True)
                (root / part / "config.json").write_text(json.dumps(config))
        assert size_multiple(root, read_json) == expected, name


def test_custom_pipeline_code_needs_trust(sd: Path, tmp_path: Path) -> None:
    import shutil

    from corral.errors import UnsafeModelError
    from corral.models.inspect import inspect_path

    custom = tmp_path / "custom"
    shutil.copytree(sd, custom)
    index = json.loads((custom / "model_index.json").read_text())
    index["unet"] = ["my_unet", "MyUNet"]  # a component from the folder's own Python code
    (custom / "model_index.json").write_text(json.dumps(index))
    info = inspect_path(custom)
    assert info.needs_remote_code and any("--trust-remote-code" in n for n in info.notes)
    runtime = runtime_with({"custom": custom})

    async def scenario() -> None:
        async with runtime:
            await chunks_of_model(runtime, "custom", GenerateImageRequest("x", steps=1))

    with pytest.raises(UnsafeModelError, match="own Python code"):
        asyncio.run(scenario())


async def chunks_of_model(runtime: Any, model: str, request: GenerateImageRequest) -> list[Any]:
    return [c async for c in runtime.run(Task.GENERATE_IMAGE, model, request, CALL)]
