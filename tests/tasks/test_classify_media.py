"""classify_audio and classify_video on tiny random-weight AST, wav2vec2 and VideoMAE heads built from
configs: labels and scores as transformers computes them on the same features (audio resampled with
soxr to the extractor's rate; frames sampled evenly from the decoded clip), concurrent clips equal
solo ones (also clips of different lengths, which must not be padded for one another), and the
doors: the CLI, the Hugging Face task API (the real InferenceClient for audio; a raw video body),
the sidecar; bad audio and video refused with their status, then a good request."""

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
from tests.fixtures.tiny_av_classifiers import (
    AUDIO_LABELS,
    VIDEO_LABELS,
    build_ast,
    build_videomae,
    build_wav2vec2_classifier,
    chord_wav,
    colour_mp4,
)

from corral.audio import decode_audio, resample
from corral.runtime.dispatcher import CallInfo, Door
from corral.sidecar.client import SidecarClient
from corral.tasks import ClassifyAudioRequest, ClassifyVideoRequest, Task
from corral.video import decode_video, even_indices

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CALL = CallInfo(Door.CLI, "test")


@pytest.fixture(scope="module")
def ast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ast(tmp_path_factory.mktemp("ast")).path


@pytest.fixture(scope="module")
def w2v(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wav2vec2_classifier(tmp_path_factory.mktemp("w2v")).path


@pytest.fixture(scope="module")
def vmae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_videomae(tmp_path_factory.mktemp("vmae")).path


def by_hand_audio(path: Path, wav: bytes) -> list[tuple[str, float]]:
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    extractor = AutoFeatureExtractor.from_pretrained(str(path))
    model = AutoModelForAudioClassification.from_pretrained(str(path)).eval()
    audio = resample(decode_audio(wav), extractor.sampling_rate)
    with torch.inference_mode():
        probs = model(**extractor([audio.samples], sampling_rate=extractor.sampling_rate,
                                  return_tensors="pt")).logits.softmax(-1)[0]
    return sorted(((model.config.id2label[i], float(p)) for i, p in enumerate(probs)), key=lambda x: -x[1])


def by_hand_video(path: Path, mp4: bytes) -> list[tuple[str, float]]:
    import torch
    from transformers import AutoImageProcessor, AutoModelForVideoClassification

    model = AutoModelForVideoClassification.from_pretrained(str(path)).eval()
    clip = decode_video(mp4)
    frames = [clip.frames[i] for i in even_indices(len(clip.frames), model.config.num_frames)]
    with torch.inference_mode():
        probs = model(**AutoImageProcessor.from_pretrained(str(path))([frames], return_tensors="pt")).logits.softmax(-1)
    return sorted(((model.config.id2label[i], float(p)) for i, p in enumerate(probs[0])), key=lambda x: -x[1])


def close(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    return [g[0] for g in got] == [w[0] for w in want] and np.allclose([g[1] for g in got], [w[1] for w in want],
                                                                         atol=1e-5)


def test_scores_as_transformers_computes_them_and_batched_equal_solo(ast: Path, w2v: Path, vmae: Path) -> None:
    clips = [chord_wav(1.0), chord_wav(0.5, rate=44100, base=330.0), chord_wav(0.75, base=110.0)]
    videos = [colour_mp4(8), colour_mp4(12)]
    runtime = runtime_with({"ast": ast, "w2v": w2v, "vmae": vmae})

    async def scenario() -> tuple[Any, ...]:
        async with runtime:
            audio = [decode_audio(c) for c in clips]
            solo = {name: [(await runtime.call(Task.CLASSIFY_AUDIO, name, ClassifyAudioRequest((a,)), CALL)).labels[0]
                           for a in audio] for name in ("ast", "w2v")}
            together = {name: await asyncio.gather(*(runtime.call(Task.CLASSIFY_AUDIO, name, ClassifyAudioRequest((a,)),
                                                                  CALL) for a in audio)) for name in ("ast", "w2v")}
            clips_v = [decode_video(v) for v in videos]
            video = (await runtime.call(Task.CLASSIFY_VIDEO, "vmae", ClassifyVideoRequest(tuple(clips_v)), CALL)).labels
            status = runtime.status()
            return solo, together, video, status

    solo, together, video, status = asyncio.run(scenario())
    for name, path in (("ast", ast), ("w2v", w2v)):
        for clip, alone, batched in zip(clips, solo[name], together[name], strict=True):
            assert close(alone, by_hand_audio(path, clip)) and {label for label, _ in alone} == set(AUDIO_LABELS)
            assert close(batched.labels[0], alone)  # concurrent clips of 1 s, 0.5 s and 0.75 s: as alone
    for mp4, labels in zip(videos, video, strict=True):
        assert close(labels, by_hand_video(vmae, mp4)) and {label for label, _ in labels} == set(VIDEO_LABELS)
    assert all(m.measured_bytes > 0 for m in status.models)  # each model's memory measured at load


def test_doors_and_bad_input(ast: Path, vmae: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient
    from tests.server.conftest import Server

    (tmp_path / "clip.wav").write_bytes(chord_wav())
    (tmp_path / "clip.mp4").write_bytes(colour_mp4())
    assert run_cli("pull", str(ast), "--name", "ast").returncode == 0
    assert run_cli("pull", str(vmae), "--name", "vmae").returncode == 0
    r = run_cli("run", "ast", str(tmp_path / "clip.wav"), "--json", "--top-k", "2")
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    assert [x["label"] for x in cli] == [label for label, _ in by_hand_audio(ast, chord_wav())[:2]]
    r = run_cli("run", "vmae", str(tmp_path / "clip.mp4"))
    assert r.returncode == 0 and by_hand_video(vmae, colour_mp4())[0][0] in r.stdout.splitlines()[1]
    with SidecarClient() as sidecar:
        answer = sidecar.call("classify_audio", {"model": "ast", "inputs": base64.b64encode(chord_wav()).decode()})
        assert [x["label"] for x in answer] == [x["label"] for x in json.loads(run_cli("run", "ast", str(
            tmp_path / "clip.wav"), "--json").stdout)]
    srv = Server(tmp_path / "served", "--max-audio-seconds", "2", "--max-video-frames", "20",
                 register={"ast": ast, "vmae": vmae})
    try:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        labels = InferenceClient(model=f"{srv.url}/models/ast").audio_classification(chord_wav())
        assert labels[0].label == cli[0]["label"] and abs(labels[0].score - cli[0]["score"]) < 1e-5
        with srv.client() as client:
            video = client.post("/models/vmae", content=colour_mp4(), headers={"content-type": "video/mp4"})
            assert video.status_code == 200 and video.json()[0]["label"] == by_hand_video(vmae, colour_mp4())[0][0]
            for model, body, status, words in (
                    ("ast", b"RIFF....WAVEnot really", 400, "not audio"), ("ast", b"", 400, "empty"),
                    ("ast", chord_wav(3.0), 413, "limit is 2 s"), ("vmae", b"\x00\x00\x00\x18ftypmp42", 400, "video"),
                    ("vmae", colour_mp4(24), 413, "limit is 20")):
                bad = client.post(f"/models/{model}", content=body, headers={"content-type": "application/x-binary"})
                assert bad.status_code == status and words in bad.json()["error"]["message"], (model, bad.text)
            good = client.post("/models/ast", content=chord_wav(), headers={"content-type": "audio/wav"})
            assert good.status_code == 200 and good.json()[0]["label"] == cli[0]["label"]
    finally:
        srv.stop()
