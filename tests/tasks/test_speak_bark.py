"""speak with Bark (tiny random weights with Bark's vocabularies, greedy generation configs): the audio
is ``BarkModel.generate`` on the processor's inputs called by hand, sentence by sentence, at 24 kHz;
voices are ``default`` (no preset) and the presets the folder lists, read from the folder whatever
its ``repo_or_path`` says; a preset path that leaves the folder, an unknown voice and a speed Bark
cannot apply are clear errors; the CLI writes the WAV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import each_call
from tests.fixtures.tiny_tts import build_bark

from corral.errors import CorralError, InvalidModelFileError, UsageError
from corral.runtime.dispatcher import CallInfo, Door
from corral.speech import SpeechInputError, sentences
from corral.tasks import AudioChunk, SpeakRequest, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CALL = CallInfo(Door.CLI, "test")
TEXT = "hello there. the cat!"
PRESETS = ("v2/en_speaker_1", "v2/en_speaker_2")


@pytest.fixture(scope="module")
def bark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bark(tmp_path_factory.mktemp("bark") / "bark", PRESETS).path


def by_hand(folder: Path, text: str, preset: str | None) -> list[np.ndarray]:
    import torch
    from transformers import BarkModel, BarkProcessor

    processor = BarkProcessor.from_pretrained(str(folder))
    processor.speaker_embeddings["repo_or_path"] = str(folder)
    model = BarkModel.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for sentence in sentences(text):
            inputs = processor(sentence, voice_preset=preset)
            out.append(model.generate(**inputs)[0].numpy())
    return out


def spoken(folder: Path, *requests: SpeakRequest) -> list[list[AudioChunk] | CorralError]:
    return each_call(folder, Task.SPEAK, *requests)


def test_audio_is_generate_on_the_processor_inputs(bark: Path) -> None:
    plain, second, unknown, fast = spoken(bark, SpeakRequest(TEXT, "alloy"), SpeakRequest(TEXT, PRESETS[1]),
                                          SpeakRequest(TEXT, "v2/en_speaker_9"), SpeakRequest(TEXT, None, 0.5))
    for got, preset in ((plain, None), (second, PRESETS[1])):
        assert isinstance(got, list) and all(c.sample_rate == 24000 for c in got)
        expected = by_hand(bark, TEXT, preset)
        assert len(got) == 3 and len(got[-1].samples) == 0
        for chunk, want in zip(got[:-1], expected, strict=True):
            assert len(want) > 0
            np.testing.assert_allclose(chunk.samples, want, atol=1e-5)
    assert isinstance(unknown, SpeechInputError)
    assert f"its voices: default, {PRESETS[0]}, {PRESETS[1]}" in str(unknown)
    assert isinstance(fast, UsageError) and "Bark speaks at its own pace" in str(fast)


def test_a_preset_cannot_leave_the_folder(tmp_path: Path) -> None:
    folder = build_bark(tmp_path / "leaky", ("v2/en_speaker_1",)).path
    outside = tmp_path / "outside_semantic_prompt.npy"
    np.save(outside, np.zeros(12, dtype=np.int64))
    table = json.loads((folder / "speaker_embeddings_path.json").read_text())
    table["v2/en_speaker_1"]["semantic_prompt"] = "../outside_semantic_prompt.npy"
    (folder / "speaker_embeddings_path.json").write_text(json.dumps(table))
    (refused,) = spoken(folder, SpeakRequest("hello", "v2/en_speaker_1"))
    assert isinstance(refused, InvalidModelFileError)
    assert "voice preset 'v2/en_speaker_1' cannot be read" in str(refused)


def test_cli_writes_a_wav_at_the_generation_rate(bark: Path, tmp_path: Path) -> None:
    import soundfile as sf

    out = tmp_path / "bark.wav"
    r = run_cli("run", str(bark), TEXT, "-o", str(out), "--voice", PRESETS[0], "--json")
    assert r.returncode == 0, r.stderr
    samples, rate = sf.read(out, dtype="float32")
    expected = np.concatenate(by_hand(bark, TEXT, PRESETS[0]))
    assert rate == 24000 and json.loads(r.stdout)["sample_rate"] == 24000
    np.testing.assert_allclose(samples, expected, atol=2 / 32768 + 1e-5)
