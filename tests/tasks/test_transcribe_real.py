"""Real trained speech recognisers end to end on a sentence espeak-ng speaks: pocketsphinx (its own
en-US model, pkg:pocketsphinx) through /v1/audio/transcriptions with the official openai SDK and
through the Hugging Face task API with the real InferenceClient; Whisper base through
faster-whisper (whisper-base: the CTranslate2 model joined from its two packages) through the CLI,
the sidecar and the OpenAI routes (verbose_json with words, subtitles, translation). Each kind of
bad audio gets its 4xx, and the server still transcribes after each one."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import need_program, run_cli
from tests.fixtures.tiny_speech import heard, speak, speak_to, wav_bytes

from corral.sidecar.client import SidecarClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def espeak() -> str:
    return need_program("espeak-ng")


def test_whisper_base_through_the_cli_and_the_sidecar(espeak: str, tmp_path: Path) -> None:
    speech = speak_to(espeak, tmp_path / "speech.wav")
    said = run_cli("run", "whisper-base", str(speech), "--dtype", "int8")
    assert said.returncode == 0, said.stderr
    assert heard(said.stdout) >= 0.8, said.stdout
    subtitles = run_cli("run", "whisper-base", str(speech), "--format", "srt")
    assert subtitles.returncode == 0, subtitles.stderr
    cues = [block.splitlines() for block in subtitles.stdout.strip().split("\n\n")]
    assert [c[0] for c in cues] == [str(i) for i in range(1, len(cues) + 1)] and all(" --> " in c[1] for c in cues)
    assert heard(" ".join(" ".join(c[2:]) for c in cues)) >= 0.8
    piped = subprocess.run([sys.executable, "-m", "corral", "run", "whisper-base", "-", "--json", "--timestamps",
                            "word"], input=speech.read_bytes(), capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    verbose = json.loads(piped.stdout)
    assert verbose["language"] == "english" and verbose["task"] == "transcribe" and heard(verbose["text"]) >= 0.8
    assert [w["word"] for w in verbose["words"]][:3] == ["I", "would", "like"]
    assert all(0 <= w["start"] <= w["end"] <= verbose["duration"] for w in verbose["words"])
    missing = run_cli("run", "whisper-base", str(tmp_path / "nothing.wav"))
    assert missing.returncode == 2 and "no such audio file" in missing.stderr
    with SidecarClient() as client:
        audio = base64.b64encode(speech.read_bytes()).decode()
        got = client.call("transcribe", {"model": "whisper-base", "inputs": audio,
                                         "parameters": {"return_timestamps": True}})
        assert heard(got["text"]) >= 0.8, got
        assert got["chunks"] and all(0 <= c["timestamp"][0] <= c["timestamp"][1] <= 6.0 for c in got["chunks"])


def test_the_http_door_with_the_openai_sdk(espeak: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server.conftest import Server

    speech = speak_to(espeak, tmp_path / "speech.wav").read_bytes()  # sizes in its header (not streamed)
    srv = Server(tmp_path / "served", "--models", "pocketsphinx,whisper-base", "--max-audio-seconds", "20",
                 "--max-body", str(2 * 1024 * 1024), "--threads", "2")
    try:
        _openai_sdk(srv.url, speech)
        _hf_client(srv.url, speech, monkeypatch)
        _bad_inputs(srv.url, speech, espeak)
    finally:
        srv.stop()


def _openai_sdk(url: str, speech: bytes) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=300)
    sphinx = client.audio.transcriptions.create(model="pocketsphinx", file=("speech.wav", speech))
    assert heard(sphinx.text) >= 0.7, sphinx.text
    assert sphinx.usage is not None and sphinx.usage.type == "duration" and sphinx.usage.seconds == 6
    verbose = client.audio.transcriptions.create(model="whisper-base", file=("speech.wav", speech),
                                                 response_format="verbose_json", language="en",
                                                 timestamp_granularities=["word", "segment"])
    assert heard(verbose.text) >= 0.8 and verbose.language == "english"
    assert verbose.segments and verbose.words and verbose.duration == pytest.approx(5.83, abs=0.05)
    assert all(0 <= s.start <= s.end <= verbose.duration for s in verbose.segments)
    assert heard(" ".join(w.word for w in verbose.words)) >= 0.8
    vtt = client.audio.transcriptions.create(model="whisper-base", file=("speech.wav", speech), response_format="vtt")
    assert isinstance(vtt, str) and vtt.startswith("WEBVTT") and " --> " in vtt and heard(vtt) >= 0.8
    with warnings.catch_warnings():  # the SDK marks translations deprecated; the route is still OpenAI's
        warnings.simplefilter("ignore", DeprecationWarning)
        english = client.audio.translations.create(model="whisper-base", file=("speech.wav", speech),
                                                   response_format="text")
    assert isinstance(english, str) and heard(english) >= 0.7, english


def _hf_client(url: str, speech: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    client = InferenceClient(model=f"{url}/models/pocketsphinx")
    plain = client.automatic_speech_recognition(speech)  # the raw audio as the body
    assert heard(plain.text) >= 0.7 and plain.chunks is None
    stamped = client.automatic_speech_recognition(speech, extra_body={"return_timestamps": "word"})  # JSON, base64
    assert stamped.text == plain.text and stamped.chunks
    assert [c.text for c in stamped.chunks] == plain.text.split()
    assert all(0 <= c.timestamp[0] <= c.timestamp[1] <= 6.0 for c in stamped.chunks)


def _post(url: str, data: bytes, model: str = "pocketsphinx", route: str = "transcriptions", **fields: Any) -> Any:
    return httpx.post(f"{url}/v1/audio/{route}", files={"file": ("audio.wav", data)}, data={"model": model, **fields},
                      timeout=300)


def _bad_inputs(url: str, speech: bytes, espeak: str) -> None:
    hello = speak(espeak, "Hello.")
    no_codec = bytearray(speech)
    tag = no_codec.index(b"fmt ") + 8
    no_codec[tag:tag + 2] = struct.pack("<H", 0x9999)  # a WAV format tag no decoder knows
    silence = wav_bytes(np.zeros(25 * 8000, dtype=np.float32), 8000)  # 25 s, 400 kB: under the body limit
    cases = [(b"", {}, 400, "empty"), (b"this is not audio at all", {}, 400, "not audio"),
             (speech[: len(speech) // 2], {}, 400, "truncated"), (bytes(no_codec), {}, 400, "codec"),
             (silence, {}, 413, "limit is 20 s"), (b"\0" * (3 * 1024 * 1024), {}, 413, "limit is 2097152"),
             (speech, {"route": "translations"}, 422, "cannot translate"),
             (speech, {"response_format": "xml"}, 422, "response_format"),
             (speech, {"model": "nobody"}, 404, "nobody")]
    for data, fields, status, words in cases:
        answer = _post(url, data, **fields)
        assert answer.status_code == status, (words, answer.text)
        assert words in answer.json()["error"]["message"]
        still = _post(url, hello, response_format="text")
        assert still.status_code == 200 and still.text.strip(), (words, still.text)
    assert httpx.post(f"{url}/v1/audio/transcriptions", json={"model": "pocketsphinx"}).status_code == 422


def test_pocketsphinx_hears_speech_cut_off_on_a_frame_boundary(espeak: str) -> None:
    """pocketsphinx's Segmenter closes speech still going at the end of the audio only when the last
    frame (30 ms: 480 samples at 16 kHz) is short: audio of whole frames, cut mid-sentence, gave an
    empty transcript. Cut at a whole frame and one sample later, it is heard the same."""
    import io

    import soundfile as sf

    from corral.audio import resample
    from corral.engines.base import LoadOptions
    from corral.engines.sphinx.handler import SphinxHandler
    from corral.media_tasks import Audio, TranscribeRequest
    from corral.models.inspect import inspect_path
    from corral.models.packaged import find_packaged_model

    folder = find_packaged_model("pocketsphinx")
    engine = SphinxHandler(folder, inspect_path(folder), LoadOptions())
    engine.load()
    samples, rate = sf.read(io.BytesIO(speak(espeak)), dtype="float32")
    at16k = resample(Audio(np.asarray(samples, dtype=np.float32), int(rate)), 16000).samples
    cut = int(len(at16k) * 0.8) // 480 * 480  # mid-sentence, a whole number of frames
    heard_at = {n: engine.transcribe(TranscribeRequest(Audio(at16k[:n], 16000), language="en")).text
                for n in (cut, cut + 1)}
    assert heard_at[cut + 1].split()[:3] == ["i", "would", "like"], heard_at
    assert heard_at[cut] == heard_at[cut + 1]
