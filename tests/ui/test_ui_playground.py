"""The Playground page in a real browser: each task's form for a tiny model of that task, run, and a
result of the right kind: a similarity matrix (embeddings), a ranked list (rerank), labels as bars
(text, zero-shot, image and audio classification), entities highlighted (NER), an answer (QA,
translation, summarisation, captioning, transcription), boxes drawn on the image (detection), masks
over it (segmentation), an audio element with a duration (text-to-speech), an image after every diffusion step
was shown (image generation), a video from a job whose progress was shown (video generation). No
console error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect
from tests.fixtures.tiny_av_classifiers import build_ast, build_videomae
from tests.fixtures.tiny_diffusion import build_text_to_video
from tests.fixtures.tiny_media import build_captioner, build_detr, build_segformer, build_stable_diffusion, build_vit
from tests.fixtures.tiny_models import (
    build_bart,
    build_bert_classifier,
    build_nli_classifier,
    build_question_answering,
    build_token_classifier,
)
from tests.fixtures.tiny_rerankers import build_crossencoder
from tests.fixtures.tiny_speech import build_whisper_asr
from tests.fixtures.tiny_translators import build_marian
from tests.fixtures.tiny_tts import build_vits
from tests.server.conftest import Server
from tests.ui.browser import browser, watch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import soundfile
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / "picture.png")
    t = np.arange(16000) / 16000
    soundfile.write(root / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    from corral.video import encode_mp4

    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(8)]
    (root / "clip.mp4").write_bytes(encode_mp4(frames, 8))
    return {"image": root / "picture.png", "audio": root / "tone.wav", "video": root / "clip.mp4"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("pg-models")
    builders = {"cls": build_bert_classifier, "nli": build_nli_classifier, "ner": build_token_classifier,
                "qa": build_question_answering, "vit": build_vit, "detr": build_detr, "seg": build_segformer,
                "cap": build_captioner, "asr": build_whisper_asr, "tts": build_vits, "ast": build_ast,
                "marian": build_marian, "ce": build_crossencoder, "sd": build_stable_diffusion,
                "t2v": build_text_to_video, "vmae": build_videomae}
    register = {name: build(root / name).path for name, build in builders.items()}
    register["sum"] = build_bart(root / "sum", pipeline_tag="summarization").path
    server = Server(tmp_path_factory.mktemp("pg"), "--threads", "2", "--models", "minilm", register=register)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(srv: Server) -> Iterator[Any]:
    with browser(microphone=True) as ctx:  # chromium's fake microphone: a tone
        yield watch(ctx.new_page())


def run(page: Any, srv: Server, model: str, task: str, fields: dict[str, str], file: Path | None = None) -> Any:
    page.goto(f"{srv.url}/ui/#/playground?model={model}")
    page.get_by_label("Task").select_option(task)
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)
    if file is not None:
        page.get_by_label("File").set_input_files(str(file))
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("status")).to_have_text("done", timeout=120_000)
    return page.locator(".result")


def test_text_tasks(page: Any, srv: Server) -> None:
    p = page.page
    result = run(p, srv, "minilm", "embed", {"Inputs (one per line)": "a cat\na dog\nthe stock market"})
    expect(result.locator("table.similarity td")).to_have_count(9)
    assert result.locator("td").first.inner_text() == "1.000"
    result = run(p, srv, "ce", "rerank", {"Query": "cats", "Documents (one per line)": "a cat\na car\nthe sea"})
    expect(result.locator("ol.ranked li")).to_have_count(3)
    result = run(p, srv, "cls", "classify_text", {"Text": "what a film"})
    assert result.locator("ul.labels li").count() >= 2 and "%" in result.inner_text()
    result = run(p, srv, "nli", "classify_text", {"Text": "the match ended 2-1",
                                                   "Labels (comma-separated, for zero-shot)": "sport, politics"})
    expect(result.locator("ul.labels li")).to_have_count(2)
    result = run(p, srv, "ner", "classify_tokens", {"Text": "Alice flew to Paris with Bob"})
    assert result.locator("p.entities").inner_text() == "Alice flew to Paris with Bob"
    result = run(p, srv, "qa", "answer_question", {"Question": "who flew?", "Context": "Alice flew to Paris."})
    assert "%" in result.locator("p.answer").inner_text()
    result = run(p, srv, "marian", "translate", {"Text": "the cat sat on the mat"})
    expect(result.locator("p.answer")).to_be_attached()
    result = run(p, srv, "sum", "summarize", {"Text": "the cat sat on the mat and the dog ran in the park " * 3})
    expect(result.locator("p.answer")).to_be_attached()
    page.shot("playground-text")
    assert page.errors == []


def test_media_tasks(page: Any, srv: Server, media: dict[str, Path]) -> None:
    p = page.page
    result = run(p, srv, "vit", "classify_image", {}, media["image"])
    assert result.locator("ul.labels li").count() >= 2
    result = run(p, srv, "detr", "detect_objects", {"Threshold": "0"}, media["image"])
    canvas = result.locator("canvas")
    assert canvas.get_attribute("width") == "80" and canvas.get_attribute("height") == "64"
    assert result.locator("ul.boxes li").count() >= 1  # threshold 0: every box the tiny DETR finds
    page.shot("playground-detection")
    result = run(p, srv, "seg", "segment_image", {}, media["image"])
    assert result.locator("canvas").count() == 1 and result.locator("ul.segments li").count() >= 1
    result = run(p, srv, "cap", "describe_image", {}, media["image"])
    expect(result.locator("p.answer")).to_be_attached()
    result = run(p, srv, "asr", "transcribe", {}, media["audio"])
    expect(result.locator("p.answer")).to_be_attached()
    result = run(p, srv, "ast", "classify_audio", {}, media["audio"])
    assert result.locator("ul.labels li").count() >= 1
    result = run(p, srv, "vmae", "classify_video", {}, media["video"])
    assert result.locator("ul.labels li").count() >= 1
    result = run(p, srv, "tts", "speak", {"Text": "hello there"})
    audio = result.locator("audio")
    expect(audio).to_have_count(1)
    p.wait_for_timeout(200)
    duration = "a => new Promise(r => a.readyState >= 1 ? r(a.duration) : a.onloadedmetadata = () => r(a.duration))"
    assert audio.evaluate(duration) > 0
    page.shot("playground-speech")
    result = run(p, srv, "sd", "generate_image", {"Prompt": "a red square", "Steps": "3"})
    image = result.locator("img")
    expect(image).to_have_count(1)
    assert image.evaluate("i => i.decode().then(() => i.naturalWidth)") > 0
    bar = p.get_by_label("Progress")
    steps = int(bar.get_attribute("max") or 0)
    assert steps >= 3 and bar.evaluate("b => b.value") == steps  # every step was streamed (PNDM adds one)
    result = run(p, srv, "t2v", "generate_video", {"Prompt": "a red square", "Steps": "2", "Frames": "4"})
    video = result.locator("video")
    expect(video).to_have_count(1)
    assert video.get_attribute("src").startswith("blob:") and bar.evaluate("b => b.value") == 100
    page.shot("playground-video")
    assert page.errors == []


def test_transcribing_from_the_microphone(page: Any, srv: Server) -> None:
    p = page.page
    p.goto(f"{srv.url}/ui/#/playground?model=asr")
    p.get_by_label("Task").select_option("transcribe")
    p.get_by_role("button", name="Record").click()
    expect(p.get_by_text("recording…")).to_be_visible()
    p.wait_for_timeout(1200)
    p.get_by_role("button", name="Stop recording").click()
    expect(p.get_by_text(re.compile(r"recorded \d"))).to_be_visible()
    assert p.get_by_label("File").evaluate("i => i.files[0].name") == "recording.webm"
    p.get_by_role("button", name="Run").click()
    expect(p.get_by_role("status")).to_have_text("done", timeout=120_000)
    expect(p.locator(".result p.answer")).to_be_attached()  # the recording decoded and transcribed on the server
    assert page.errors == []
