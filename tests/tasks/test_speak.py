"""speak on a tiny random-weight VITS built from a config (its tokenizer built locally): the audio
is the model called by hand, sentence by sentence, at the config's sampling rate, through the
runtime, the CLI and the HTTP door; speakers are voices, speed is the forward's speaking_rate;
the voice rule (OpenAI names, 400 listing voices) and the text checks (empty 400, too long 413,
speed 422); espeak-ng disappears with its program."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import registered, run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_tts import SAMPLING_RATE, build_vits

from corral.errors import UsageError
from corral.media import MediaTooLargeError
from corral.runtime.dispatcher import CallInfo, Door
from corral.speech import OPENAI_VOICES, SpeechInputError, choose_voice, sentences, speak_request
from corral.tasks import AudioChunk, SpeakRequest, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CALL = CallInfo(Door.CLI, "test")
TEXT = "Hello there, little model. It speaks twice!"


@pytest.fixture(scope="module")
def vits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_vits(tmp_path_factory.mktemp("vits") / "vits").path


def by_hand(folder: Path, text: str, **kwargs: Any) -> list[np.ndarray]:
    """The waveform of each sentence, from the model and tokenizer called directly."""
    import torch
    from transformers import AutoModelForTextToWaveform, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForTextToWaveform.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for sentence in sentences(text):
            out.append(model(**tokenizer(sentence, return_tensors="pt"), **kwargs).waveform[0].numpy())
    return out


def spoken(models: dict[str, Path], name: str, *requests: SpeakRequest) -> list[list[AudioChunk]]:
    runtime = runtime_with(models)

    async def scenario() -> list[list[AudioChunk]]:
        async with runtime:
            return [[c async for c in runtime.run(Task.SPEAK, name, r, CALL)] for r in requests]

    return asyncio.run(scenario())


def test_the_voice_rule_and_the_text_checks() -> None:
    voices = ["en-us", "fr", "De"]
    assert choose_voice(None, voices, "en-us") == "en-us"
    assert all(choose_voice(v, voices, "en-us") == "en-us" for v in (*OPENAI_VOICES, "Alloy", "default"))
    assert choose_voice("FR", voices, "en-us") == "fr" and choose_voice("de", voices, "en-us") == "De"
    with pytest.raises(SpeechInputError, match="no voice 'klingon'; its voices: en-us, fr, De") as caught:
        choose_voice("klingon", voices, "en-us")
    assert caught.value.http_status == 400
    assert sentences(" One. Two?  Three!Four ") == ["One.", "Two?", "Three!Four"]
    assert speak_request("hi", "alloy", 2.0, 10) == SpeakRequest("hi", "alloy", 2.0)
    for text, speed, error, status in (("  \n", 1.0, SpeechInputError, 400), ("x" * 11, 1.0, MediaTooLargeError, 413),
                                       ("hi", 4.5, UsageError, 422), ("hi", 0.2, UsageError, 422)):
        with pytest.raises(error) as refused:
            speak_request(text, None, speed, 10)
        assert refused.value.http_status == status


def test_piper_providers_follow_the_device(caplog: pytest.LogCaptureFixture) -> None:
    from corral.engines.piper.handler import CPU, CUDA, providers_for

    both = [CUDA, CPU]
    assert providers_for("cpu", both) == [CPU]
    assert providers_for(None, both) == [(CUDA, {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}), CPU]
    assert providers_for("cuda:1", both)[0][1]["device_id"] == 1
    assert providers_for(None, [CPU]) == [CPU]  # auto: the CPU where onnxruntime has no CUDA
    assert providers_for("cuda", [CPU]) == [CPU] and "no CUDA provider" in caplog.text  # said, not hidden
    with pytest.raises(UsageError, match="CPU or CUDA"):
        providers_for("mps", both)


def test_audio_is_the_model_called_by_hand(vits: Path) -> None:
    chunks = spoken({"vits": vits}, "vits", SpeakRequest(TEXT))[0]
    expected = by_hand(vits, TEXT)
    assert len(expected) == 2 and all(len(w) > 0 for w in expected)
    audio, last = chunks[:-1], chunks[-1]
    assert len(audio) == 2 and all(c.sample_rate == SAMPLING_RATE for c in chunks)
    for got, want in zip(audio, expected, strict=True):
        np.testing.assert_allclose(got.samples, want, atol=1e-6)
    assert len(last.samples) == 0 and last.usage is not None and last.usage.prompt_tokens == len(TEXT)


def test_speakers_are_voices_and_speed_is_the_speaking_rate(tmp_path: Path) -> None:
    multi = build_vits(tmp_path / "multi", speakers=3).path
    text = "a short sentence"
    default, second, slow = spoken({"multi": multi}, "multi", SpeakRequest(text, "alloy"), SpeakRequest(text, "2"),
                                    SpeakRequest(text, None, 0.5))
    np.testing.assert_allclose(default[0].samples, by_hand(multi, text, speaker_id=0)[0], atol=1e-6)
    np.testing.assert_allclose(second[0].samples, by_hand(multi, text, speaker_id=2)[0], atol=1e-6)
    np.testing.assert_allclose(slow[0].samples, by_hand(multi, text, speaker_id=0, speaking_rate=0.5)[0], atol=1e-6)
    assert len(slow[0].samples) > len(default[0].samples)  # half the rate: each sound lasts longer
    with pytest.raises(SpeechInputError, match="its voices: 0, 1, 2"):
        spoken({"multi": multi}, "multi", SpeakRequest(text, "nova2"))


def test_cli_and_http_write_a_wav_of_the_config_rate(vits: Path, tmp_path: Path) -> None:
    import httpx
    import soundfile as sf
    from tests.server.conftest import Server

    expected = np.concatenate(by_hand(vits, TEXT))
    assert run_cli("pull", str(vits), "--name", "vits").returncode == 0
    out = tmp_path / "speech.wav"
    r = run_cli("run", "vits", TEXT, "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["sample_rate"] == SAMPLING_RATE and summary["format"] == "wav" and summary["file"] == str(out)
    samples, rate = sf.read(out, dtype="float32")
    assert rate == SAMPLING_RATE and len(samples) == len(expected)
    np.testing.assert_allclose(samples, expected, atol=2 / 32768)  # 16-bit samples
    flac = run_cli("run", "vits", TEXT, "-o", str(tmp_path / "speech.flac"))
    assert flac.returncode == 0 and sf.info(str(tmp_path / "speech.flac")).samplerate == SAMPLING_RATE
    srv = Server(tmp_path / "served", register={"vits": vits})
    try:
        got = httpx.post(f"{srv.url}/v1/audio/speech", json={"model": "vits", "input": TEXT, "voice": "alloy",
                                                              "response_format": "wav"}, timeout=60)
        assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
        streamed, rate = sf.read(io.BytesIO(got.content), dtype="float32")
        assert rate == SAMPLING_RATE
        np.testing.assert_allclose(streamed, expected, atol=2 / 32768)
    finally:
        srv.stop()


def test_espeak_ng_follows_its_program(tmp_path: Path) -> None:
    from tests.conftest import need_program

    need_program("espeak-ng")
    listed = json.loads(run_cli("list", "--json").stdout)
    row = next(e for e in listed if e["name"] == "espeak-ng")
    assert row["source"] == "system:espeak-ng" and row["tasks"] == ["speak"] and row["engine"] == "espeak"
    assert registered(listed) == []  # listed, never written to the manifest
    assert "is built in" in run_cli("pull", "espeak-ng").stdout
    removed = run_cli("rm", "espeak-ng")
    assert removed.returncode == 1 and "built in, not registered" in removed.stderr
    inspected = json.loads(run_cli("inspect", "espeak-ng", "--json").stdout)
    assert inspected["routes"]["speak"] == ["POST /v1/audio/speech", "POST /models/{name} (text-to-speech)",
                                            "sidecar speak"]
    hidden = {"PATH": str(tmp_path)}  # no espeak-ng on this PATH
    assert "espeak-ng" not in [e["name"] for e in json.loads(run_cli("list", "--json", env=hidden).stdout)]
    r = run_cli("run", "espeak-ng", "hello", "-o", str(tmp_path / "x.wav"), env=hidden)
    assert r.returncode == 1 and "the espeak-ng program is not installed" in r.stderr
    assert "apt-get install -y espeak-ng" in r.stderr
