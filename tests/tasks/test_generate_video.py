"""generate_video on a tiny random-weight TextToVideoSDPipeline built from configs
(tests/fixtures/tiny_diffusion.py): frames of the requested count and size, equal to the pipeline
called by hand, as an H.264 MP4 that PyAV decodes to that count and size; a step of progress per
diffusion step; closing the stream stopping the loop early; OpenAI's video jobs through the SDK
(create, poll, download, list, delete; a delete mid-run cancels the job, which stays as a
cancelled row), jobs left unfinished by a stopped server marked failed; the Hugging Face task shape
(huggingface_hub's InferenceClient refuses text-to-video for its hf-inference provider before
sending, so the test posts what it would), the sidecar and the CLI; each bad input refused, then a
good request served."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_diffusion import build_text_to_video

from corral.protocols.generation import mp4_bytes
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.requestlog import latest
from corral.runtime.videojobs import VideoJob, VideoJobStore
from corral.sidecar.client import SidecarClient
from corral.tasks import GenerateVideoRequest, GenerateVideoResult, Progress, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")]  # the SDK's own notice
CALL = CallInfo(Door.CLI, "test")


@pytest.fixture(scope="module")
def t2v(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_text_to_video(tmp_path_factory.mktemp("t2v")).path


def decoded(data: bytes) -> list[np.ndarray]:
    """Every frame of an MP4, decoded by PyAV, as RGB arrays."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def test_frames_as_the_pipeline_makes_them(t2v: Path) -> None:
    import torch
    from diffusers import DiffusionPipeline

    runtime = runtime_with({"t2v": t2v})
    request = GenerateVideoRequest("a cat", width=16, height=24, frames=5, steps=2, seed=3, fps=10)

    async def scenario() -> list[list[Any]]:
        async with runtime:
            return [[c async for c in runtime.run(Task.GENERATE_VIDEO, "t2v", request, CALL)] for _ in range(2)]

    first, again = asyncio.run(scenario())
    progress, result = first[:-1], first[-1]
    assert isinstance(result, GenerateVideoResult) and result.seed == 3 and result.fps == 10
    assert [(p.step, p.steps) for p in progress] == [(1, 2), (2, 2)] and all(isinstance(p, Progress) for p in progress)
    assert len(result.frames) == 5 and all(f.size == (16, 24) for f in result.frames)
    pipe = DiffusionPipeline.from_pretrained(str(t2v), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a cat", width=16, height=24, num_frames=5, num_inference_steps=2, output_type="np",
                    generator=torch.Generator("cpu").manual_seed(3)).frames[0]
    ours = np.stack([np.asarray(f) for f in result.frames]).astype(np.int16)
    assert np.abs(ours - np.round(expected * 255)).max() <= 1  # the pipeline's own frames (float -> uint8)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again[-1].frames, result.frames,
                                                                           strict=True))
    frames = decoded(mp4_bytes(result))
    assert len(frames) == 5 and frames[0].shape == (24, 16, 3)


def test_closing_the_stream_stops_the_loop(t2v: Path, corral_home: Path) -> None:
    runtime = runtime_with({"t2v": t2v})
    asked = 300

    async def scenario() -> list[Any]:
        async with runtime:
            stream = runtime.run(Task.GENERATE_VIDEO, "t2v", GenerateVideoRequest("a cat", width=8, height=8, frames=2,
                                                                                 steps=asked), CALL)
            seen = [await anext(stream)]
            await stream.aclose()
            return seen

    assert [type(c) for c in asyncio.run(scenario())] == [Progress]
    row = latest(corral_home / "requests.db", 1)[0]
    assert (row["task"], row["status"], row["completion_tokens"]) == ("generate_video", 499, 1)


def test_unfinished_jobs_of_a_stopped_server_are_failed(tmp_path: Path) -> None:
    store = VideoJobStore(tmp_path)
    store.add(VideoJob("video_a", 1, "t2v", "a cat", 8, status="in_progress", progress=40))
    store.add(VideoJob("video_b", 2, "t2v", "a dog", 8, status="completed", progress=100))
    written = store.write_content("video_b", b"mp4 bytes")
    store.close()
    reopened = VideoJobStore(tmp_path)
    a, b = reopened.get("video_a"), reopened.get("video_b")
    assert a is not None and (a.status, a.error_code) == ("failed", "server_stopped")
    assert b is not None and b.status == "completed" and written.read_bytes() == b"mp4 bytes"
    assert [p.name for p in written.parent.iterdir()] == ["video_b.mp4"]  # no temporary file left
    jobs, more = reopened.page(None, 1, newest_first=True)
    assert [j.id for j in jobs] == ["video_b"] and more
    assert [j.id for j in reopened.page("video_b", 5, newest_first=True)[0]] == ["video_a"]
    reopened.close()


def test_doors_and_bad_input(t2v: Path, tmp_path: Path) -> None:
    from tests.server.conftest import Server

    srv = Server(tmp_path / "served", "--max-video-frames", "40", register={"t2v": t2v})
    try:
        _video_jobs(srv)
        _cancel_a_job(srv)
        _bad_input(srv)
        _hugging_face(srv)
    finally:
        srv.stop()


def _client(srv: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused")


def _video_jobs(srv: Any) -> None:
    client = _client(srv)
    job = client.videos.create(model="t2v", prompt="a cat", size="16x24",  # type: ignore[arg-type]
                               extra_body={"frames": 4, "steps": 2, "seed": 1, "fps": 4})
    assert job.status == "queued" and job.model == "t2v" and job.seconds == "1"
    done = client.videos.poll(job.id, poll_interval_ms=100)
    assert done.status == "completed" and done.progress == 100 and done.size == "16x24", done
    frames = decoded(client.videos.download_content(job.id).read())
    assert len(frames) == 4 and frames[0].shape == (24, 16, 3)
    assert job.id in [v.id for v in client.videos.list()]
    deleted = client.videos.delete(job.id)
    assert deleted.deleted and deleted.object == "video.deleted"
    r = httpx.get(f"{srv.url}/v1/videos/{job.id}")
    assert r.status_code == 404


def _cancel_a_job(srv: Any) -> None:
    client = _client(srv)
    job = client.videos.create(model="t2v", prompt="a long one", size="8x8",  # type: ignore[arg-type]
                               extra_body={"frames": 2, "steps": 400})
    deadline = time.monotonic() + 120
    while client.videos.retrieve(job.id).progress == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.videos.delete(job.id).deleted is False  # unfinished: cancelled, kept
    row = httpx.get(f"{srv.url}/v1/videos/{job.id}").json()
    assert row["status"] == "cancelled" and row["error"]["code"] == "cancelled" and row["progress"] < 100
    r = httpx.get(f"{srv.url}/v1/videos/{job.id}/content")
    assert r.status_code == 409 and "cancelled" in r.json()["error"]["message"]
    logged = json.loads(run_cli("logs", "--json", env={"CORRAL_HOME": str(srv.home)}).stdout)
    assert [x["status"] for x in logged[:2]] == [499, 200]  # the job made before it finished whole
    stopped = logged[0]
    assert stopped["task"] == "generate_video" and 0 < stopped["completion_tokens"] < 400
    assert client.videos.delete(job.id).deleted is True  # finished now: removed


def _bad_input(srv: Any) -> None:
    url = f"{srv.url}/v1/videos"
    good = {"model": "t2v", "prompt": "a cat", "size": "8x8", "frames": "2", "steps": "1"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"size": "4096x4096"}, 422, "at most 4194304 pixels"),
        ({"frames": "41"}, 422, "from 1 to 40 frames"),
        ({"seconds": "12", "frames": None}, 422, "from 1 to 40 frames"),  # 12 s x 8 fps = 96 frames
        ({"model": "nope"}, 404, "nope"),
        ({"model": None}, 400, "model is required"),
        ({"steps": "many"}, 400, "steps"),
    ]
    for change, status, words in cases:
        form = {k: v for k, v in {**good, **change}.items() if v is not None}
        r = httpx.post(url, data=form, timeout=60)  # multipart/urlencoded form, as the SDK sends fields
        assert r.status_code == status, (change, r.text)
        assert words in r.json()["error"]["message"]
    r = httpx.post(url, files={"input_reference": ("a.png", b"png", "image/png")}, data=good, timeout=60)
    assert r.status_code == 400 and "input_reference" in r.json()["error"]["message"]
    before = len(_client(srv).videos.list().data)
    r = httpx.post(url, json={**good, "size": "12x8"}, timeout=60)  # the pipeline's multiple, from its folder
    assert r.status_code == 422 and "width 12: this pipeline makes images whose width and height are multiples " \
        "of 8 pixels" in r.json()["error"]["message"]
    assert len(_client(srv).videos.list().data) == before  # refused before any job existed
    ok = _client(srv).videos.poll(httpx.post(url, json=good, timeout=60).json()["id"], poll_interval_ms=100)
    assert ok.status == "completed"  # still serving


def _hugging_face(srv: Any) -> None:
    """The Hugging Face task shape, posted as InferenceClient.text_to_video builds it (the client itself
    refuses text-to-video for its hf-inference provider before sending anything)."""
    r = httpx.post(f"{srv.url}/models/t2v", json={"inputs": "a cat", "parameters": {
        "num_frames": 3, "num_inference_steps": 2, "seed": 1, "width": 16, "height": 8}}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    frames = decoded(r.content)
    assert len(frames) == 3 and frames[0].shape == (8, 16, 3)
    r = httpx.post(f"{srv.url}/models/t2v", json={"inputs": "a cat", "parameters": {"scheduler": "DDPM"}})
    assert r.status_code == 422 and "own scheduler" in r.json()["error"]["message"]


def test_sidecar_and_cli(t2v: Path, tmp_path: Path) -> None:
    from PIL import Image

    assert run_cli("pull", str(t2v), "--name", "t2v").returncode == 0
    with SidecarClient() as client:
        steps: list[dict[str, Any]] = []
        got = client.call("generate_video", {"model": "t2v", "prompt": "a cat", "size": "16x8", "frames": 3,
                                             "steps": 2, "seed": 4}, progress=steps.append)
    assert [(s["progress"], s["total"]) for s in steps] == [(1, 2), (2, 2)]
    assert got["frames"] == 3 and got["seed"] == 4 and got["mime_type"] == "video/mp4"
    frames = decoded(base64.b64decode(got["b64_json"]))
    assert len(frames) == 3 and frames[0].shape == (8, 16, 3)
    out = run_cli("run", "t2v", "a cat", "-o", str(tmp_path / "clip.mp4"), "--frames", "3", "--size", "16x8",
                  "--steps", "2", "--seed", "4", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["frames"] == 3
    assert [f.tolist() for f in decoded((tmp_path / "clip.mp4").read_bytes())] == [f.tolist() for f in frames]
    pngs = run_cli("run", "t2v", "a cat", "-o", str(tmp_path / "frames"), "--frames", "3", "--size", "16x8",
                   "--steps", "2", "--seed", "4")
    assert pngs.returncode == 0, pngs.stderr
    written = sorted((tmp_path / "frames").glob("frame-*.png"))
    assert len(written) == 3 and all(Image.open(p).size == (16, 8) for p in written)
