"""speak with SpeechT5 (tiny random weights, its vocoder and voices in its folder): the audio is
``generate_speech`` with the vocoder and the voice's x-vector called by hand, sentence by sentence,
at the vocoder's rate, through the runtime and the OpenAI SDK; the voices are the files of
``speakers/`` (none: one all-zero ``default``); a missing vocoder, a bad speaker file and a speed
SpeechT5 cannot apply are clear errors; the model needs sentencepiece, as inspection says."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import each_call
from tests.fixtures.tiny_tts import SAMPLING_RATE, build_speecht5

from corral.errors import CorralError, InvalidModelFileError, UsageError
from corral.runtime.dispatcher import CallInfo, Door
from corral.speech import SpeechInputError, sentences
from corral.tasks import AudioChunk, SpeakRequest, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CALL = CallInfo(Door.CLI, "test")
TEXT = "Hello there. The cat sat!"
VOICES = {"bdl": np.linspace(-1, 1, 8, dtype=np.float32), "slt": np.linspace(1, -1, 8, dtype=np.float32)}


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_speecht5(tmp_path_factory.mktemp("t5") / "speecht5", speakers=VOICES).path


def by_hand(folder: Path, text: str, speaker: np.ndarray) -> list[np.ndarray]:
    import torch
    from transformers import AutoTokenizer, SpeechT5ForTextToSpeech, SpeechT5HifiGan

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = SpeechT5ForTextToSpeech.from_pretrained(folder).eval()
    vocoder = SpeechT5HifiGan.from_pretrained(folder / "vocoder").eval()
    embedding = torch.from_numpy(speaker).reshape(1, -1)
    with torch.inference_mode():
        return [model.generate_speech(tokenizer(s, return_tensors="pt")["input_ids"], embedding,
                                      vocoder=vocoder).numpy() for s in sentences(text)]


def spoken(folder: Path, *requests: SpeakRequest) -> list[list[AudioChunk] | CorralError]:
    return each_call(folder, Task.SPEAK, *requests)


def test_audio_is_generate_speech_with_the_vocoder_and_the_voice(t5: Path) -> None:
    default, slt, unknown, fast = spoken(t5, SpeakRequest(TEXT, "alloy"), SpeakRequest(TEXT, "SLT"),
                                         SpeakRequest(TEXT, "nova2"), SpeakRequest(TEXT, None, 1.5))
    for got, voice in ((default, "bdl"), (slt, "slt")):  # the first voice (by name) is the default
        assert isinstance(got, list) and all(c.sample_rate == SAMPLING_RATE for c in got)
        expected = by_hand(t5, TEXT, VOICES[voice])
        assert len(got) == 3 and len(got[-1].samples) == 0  # two sentences, then the usage
        for chunk, want in zip(got[:-1], expected, strict=True):
            assert len(want) > 1000  # decoded to the length limit: real audio, not one frame
            np.testing.assert_allclose(chunk.samples, want, atol=1e-5)
    assert not np.allclose(default[0].samples, slt[0].samples)  # type: ignore[index,union-attr]
    assert isinstance(unknown, SpeechInputError) and "its voices: bdl, slt" in str(unknown)
    assert isinstance(fast, UsageError) and "SpeechT5 speaks at its own pace" in str(fast) and fast.http_status == 422


def test_a_folder_without_voices_speaks_with_a_zero_embedding(tmp_path: Path) -> None:
    folder = build_speecht5(tmp_path / "plain").path
    (got,) = spoken(folder, SpeakRequest("hello there", "default"))
    assert isinstance(got, list)
    np.testing.assert_allclose(got[0].samples, by_hand(folder, "hello there", np.zeros(8, np.float32))[0], atol=1e-5)


def test_a_missing_vocoder_or_a_bad_voice_file_is_a_clear_error(tmp_path: Path) -> None:
    bare = build_speecht5(tmp_path / "bare", vocoder=False).path
    (missing,) = spoken(bare, SpeakRequest("hello"))
    assert isinstance(missing, InvalidModelFileError) and "no vocoder" in str(missing)
    assert "SpeechT5HifiGan" in (missing.hint or "")
    ran = run_cli("run", str(bare), "hello", "-o", str(tmp_path / "x.wav"))
    assert ran.returncode == 1 and "no vocoder" in ran.stderr and "Traceback" not in ran.stderr
    wrong = build_speecht5(tmp_path / "wrong", speakers={"short": np.zeros(3, np.float32)}).path
    (bad,) = spoken(wrong, SpeakRequest("hello"))
    assert isinstance(bad, InvalidModelFileError) and "short.npy holds 3" in str(bad)
    pickled = build_speecht5(tmp_path / "pickled").path
    (pickled / "speakers").mkdir()
    np.save(pickled / "speakers" / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (refused,) = spoken(pickled, SpeakRequest("hello"))
    assert isinstance(refused, InvalidModelFileError) and "evil.npy cannot be read" in str(refused)


def test_inspect_and_the_openai_sdk(t5: Path, tmp_path: Path) -> None:
    import soundfile as sf
    from openai import OpenAI
    from tests.server.conftest import Server

    report = json.loads(run_cli("inspect", str(t5), "--json").stdout)
    assert report["tasks"] == ["speak"] and report["engine"] == "transformers"
    assert {"package": "sentencepiece", "installed": True} in report["requirements"]
    srv = Server(tmp_path / "served", register={"t5": t5})
    try:
        client = OpenAI(base_url=f"{srv.url}/v1", api_key="none")
        got = client.audio.speech.create(model="t5", input=TEXT, voice="slt", response_format="wav")
        samples, rate = sf.read(io.BytesIO(got.content), dtype="float32")
        assert rate == SAMPLING_RATE
        np.testing.assert_allclose(samples, np.concatenate(by_hand(t5, TEXT, VOICES["slt"])), atol=2 / 32768 + 1e-5)
    finally:
        srv.stop()
