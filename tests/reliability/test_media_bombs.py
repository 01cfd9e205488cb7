"""The catalogue's row 20 (issue 18): media bombs and corrupt media, each decoded by corral's own
decoders (``corral.media.decode_image``, ``corral.audio.decode_audio``, ``corral.video.decode_video``)
in a child process whose address space is limited to 512 MiB (``RLIMIT_AS``): a 50,000 x 50,000 PNG
(a real one: 300 KB of compressed zeros that would decode to 2.5 billion pixels), a WAV header
claiming 4 GB, a FLAC header claiming an hour of 96 kHz stereo (2.7 GB of samples) in 130 bytes,
10^4 video frames, frames of 8000 x 8000 and 50,000 x 50,000, and corrupt or cut headers of each
kind: refused with the right corral error (413 too big, 400 corrupt) and no MemoryError, the child's
peak address space barely moving; a 1x1 PNG, a streamed WAV and 10^4 frames under the limit work.
Then the HTTP door in-process (the fake engine, ``tests/server/test_fake_http.py``): a bomb image in
a chat request and a 4 GB WAV sent for transcription answer 413, corrupt ones 400, in OpenAI's error
shape, with no model ever loaded."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.server.test_fake_http import fake_runtime, register, run, serving

pytestmark = pytest.mark.timeout(180)
MiB = 1 << 20
LIMIT = 512 * MiB
GROWTH = 64 * MiB  # the most one decoding here may add to the child's peak address space

CHILD = r"""
import json, resource, sys
from pathlib import Path

resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[5]), int(sys.argv[5])))


def vm_peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmPeak:"))


def decoder(kind):
    if kind == "image":
        from corral.media import decode_image
        return lambda data, limits: list(decode_image(data, **limits).size)
    if kind == "audio":
        import av  # noqa: F401 - what is not WAV / FLAC / MP3 / Ogg decodes through PyAV: imported before measuring
        from corral.audio import decode_audio
        return lambda data, limits: [len(a.samples), a.sample_rate] if (a := decode_audio(data, **limits)) else None
    from corral.video import decode_video
    return lambda data, limits: [len(v.frames), v.fps] if (v := decode_video(data, **limits)) else None


kind, target, warm, limits = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
if kind == "allocate":
    try:
        bytearray(1 << 30)
        print(json.dumps({"outcome": "ok"}))
    except MemoryError:
        print(json.dumps({"outcome": "MemoryError"}))
    sys.exit(0)
decode = decoder(kind)
decode(warm.read_bytes(), {})  # the libraries imported and warm, before measuring
data = target.read_bytes()
before = vm_peak()
try:
    result = {"outcome": "ok", "value": decode(data, limits)}
except MemoryError:
    result = {"outcome": "MemoryError"}
except Exception as exc:
    result = {"outcome": type(exc).__name__, "message": str(exc), "status": getattr(exc, "http_status", None)}
result["growth"] = vm_peak() - before
print(json.dumps(result))
"""


# --- the files ---------------------------------------------------------------------------------------

def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, *, rows: int | None = None, depth: int = 1, bad_crc: bool = False) -> bytes:
    """A greyscale PNG of zeros; ``rows``: how many rows its IDAT really holds (all by default)."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0))
    if bad_crc:
        ihdr = ihdr[:-4] + bytes(b ^ 0xFF for b in ihdr[-4:])
    row = b"\0" * (1 + (width * depth + 7) // 8)
    packer = zlib.compressobj(9)
    count = height if rows is None else rows
    parts = [packer.compress(row * 64) for _ in range(count // 64)]
    idat = b"".join([*parts, packer.compress(row * (count % 64)), packer.flush()])
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@functools.cache
def png_bomb() -> bytes:
    """50,000 x 50,000 one-bit pixels, every row there: a complete, valid PNG of about 300 KB."""
    return png(50_000, 50_000)


def noise_png(size: int = 64) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("L", (size, size), os.urandom(size * size)).save(out, format="PNG")
    return out.getvalue()


def wav(data_size: int, riff_size: int, audio: bytes, rate: int = 16000, channels: int = 1) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_size) + audio)


SECOND = b"\0" * 32000  # one second of 16 kHz 16-bit silence
WAV_4GB = wav(0xFFFFFF00, 0xFFFFFF24, SECOND)


def flac_claiming_an_hour() -> bytes:
    """A tenth of a second of 96 kHz stereo FLAC whose STREAMINFO claims 3,599 s (345 million frames)."""
    import numpy as np
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, np.zeros((9600, 2), dtype=np.float32), 96000, format="FLAC", subtype="PCM_16")
    data = bytearray(out.getvalue())
    field = int.from_bytes(data[18:26], "big")  # rate 20 bits, channels 3, bits 5, total samples 36
    data[18:26] = ((field & ~((1 << 36) - 1)) | 3599 * 96000).to_bytes(8, "big")
    data[26:42] = bytes(16)  # no MD5 to check
    return bytes(data)


def frames(count: int, container: str = "mp4", size: int = 16) -> bytes:
    """``count`` black frames (MPEG-4 part 2, cheap to encode) in ``container``."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as muxer:
        stream = muxer.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((size, size, 3), np.uint8), format="rgb24")
        for _ in range(count):
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    return out.getvalue()


@functools.cache
def ten_thousand_frames(container: str = "mp4") -> bytes:
    return frames(10_000, container)


def y4m(width: int, height: int) -> bytes:
    """A YUV4MPEG2 stream: its frame size is plain text in the header, so any size can be claimed."""
    return f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + b"\0" * 4096


# case: (kind, the file, the decoder's limits, expected status or "ok", what the message / value must show)
Case = tuple[str, Callable[[], bytes], dict[str, Any], int | str, str]
CASES: dict[str, Case] = {
    "50k x 50k PNG": ("image", png_bomb, {}, 413, "more than 40000000 pixels"),
    "7000 x 7000 PNG, over corral's limit, under Pillow's": (
        "image", lambda: png(7000, 7000, rows=8), {}, 413, "7000x7000 = 49000000 pixels; the limit is 40000000"),
    "PNG over a configured limit": ("image", lambda: png(1000, 1000, rows=8), {"max_pixels": 999_999}, 413,
                                    "1000x1000 = 1000000 pixels; the limit is 999999"),
    "PNG with a broken IHDR": ("image", lambda: png(64, 64, bad_crc=True), {}, 400, "not an image corral can read"),
    "PNG cut short": ("image", lambda: noise_png()[:600], {}, 400, "the image is truncated or corrupt"),
    "not an image": ("image", lambda: b"GIF89a" + b"\xff" * 64, {}, 400, "not an image corral can read"),
    "1x1 PNG": ("image", lambda: png(1, 1), {}, "ok", "[1, 1]"),
    "WAV claiming 4 GB": ("audio", lambda: WAV_4GB, {}, 413,
                          r"WAV header declares 4294967040 bytes of audio \(134217.7 s\); the limit is 3600 s"),
    "WAV claiming more than a configured limit": (
        "audio", lambda: wav(320000, 320036, SECOND), {"max_seconds": 5}, 413,
        r"declares 320000 bytes of audio \(10.0 s"),
    "WAV shorter than its header": ("audio", lambda: wav(96000, 96036, SECOND), {}, 400, "the WAV file is truncated"),
    "WAV with 0 channels": ("audio", lambda: wav(32000, 32036, SECOND, channels=0), {}, 400,
                            "not audio corral can decode"),
    "streamed WAV (sizes 0xFFFFFFFF)": ("audio", lambda: wav(0xFFFFFFFF, 0xFFFFFFFF, SECOND), {}, "ok",
                                        "[16000, 16000]"),
    "FLAC claiming an hour of 96 kHz stereo": ("audio", flac_claiming_an_hour, {}, 400, "truncated or damaged"),
    "not audio": ("audio", lambda: b"\0" * 1000, {}, 400, "not audio corral can decode"),
    "10^4 frames over a configured limit": ("video", ten_thousand_frames, {"max_frames": 5000}, 413,
                                           "the video has 10000 frames; the limit is 5000"),
    "10^4 frames with no count in the header": ("video", lambda: ten_thousand_frames("m4v"), {"max_frames": 5000},
                                               413, "the video has more than 5000 frames"),
    "10^4 frames under the limit": ("video", ten_thousand_frames, {}, "ok", "[32, 25.0]"),
    "8000 x 8000 frames": ("video", lambda: y4m(8000, 8000), {}, 413, "8000x8000 = 64000000 pixels"),
    "50k x 50k frames": ("video", lambda: y4m(50_000, 50_000), {}, 400, "not a video corral can decode"),
    "MP4 cut in half": ("video", lambda: ten_thousand_frames()[:60_000], {}, 400, "not a video corral can decode"),
    "only an MP4 header": ("video", lambda: b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom", {}, 400, "video"),
}
WARM = {"image": lambda: png(1, 1), "audio": lambda: wav(32000, 32036, SECOND), "video": lambda: frames(3)}


def decode_limited(kind: str, target: Path, warm: Path, limits: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(target), str(warm), json.dumps(limits), str(LIMIT)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("case", list(CASES))
def test_media_is_refused_before_decoding_under_512_mib(tmp_path: Path, case: str) -> None:
    kind, build, limits, expected, shown = CASES[case]
    target, warm = tmp_path / "input", tmp_path / "warm"
    target.write_bytes(build())
    warm.write_bytes(WARM[kind]())
    result = decode_limited(kind, target, warm, limits)
    if expected == "ok":
        assert result["outcome"] == "ok" and json.dumps(result["value"]) == shown, result
    else:
        error = "MediaTooLargeError" if expected == 413 else "BadMediaError"
        assert (result["outcome"], result.get("status")) == (error, expected), result
        assert re.search(shown, result["message"]), result["message"]
    assert result["growth"] < GROWTH, result


def test_the_limit_is_in_force(tmp_path: Path) -> None:
    """1 GiB cannot be allocated under the child's limit, and the bombs are what they claim: the PNG's
    IDAT holds every one of its 2.5 billion pixels' rows, the FLAC's header 345 million frames."""
    assert decode_limited("allocate", tmp_path, tmp_path, {})["outcome"] == "MemoryError"
    bomb = png_bomb()
    assert len(bomb) < 400_000
    idat_length = struct.unpack(">I", bomb[33:37])[0]
    assert len(zlib.decompress(bomb[41:41 + idat_length])) == 50_000 * (1 + 50_000 // 8)
    import soundfile as sf

    with sf.SoundFile(io.BytesIO(flac_claiming_an_hour())) as claimed:
        assert (claimed.frames, claimed.channels, claimed.samplerate) == (3599 * 96000, 2, 96000)


# --- the HTTP door ---------------------------------------------------------------------------------

def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def chat_with_image(image: bytes) -> dict[str, Any]:
    parts = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": data_url(image)}}]
    return {"model": "echo", "messages": [{"role": "user", "content": parts}]}


def test_the_http_door_answers_413_and_400(tmp_path: Path) -> None:
    register(tmp_path, "echo")

    async def scenario() -> tuple[list[tuple[int, Any]], list[Any]]:
        rt = fake_runtime()
        async with serving(rt) as (_, http):
            answers = []
            for image in (png_bomb(), png(64, 64, bad_crc=True)):
                r = await http.post("/v1/chat/completions", json=chat_with_image(image))
                answers.append((r.status_code, r.json()))
            for audio in (WAV_4GB, b"\0" * 1000):
                r = await http.post("/v1/audio/transcriptions", data={"model": "echo"},
                                    files={"file": ("clip.wav", audio, "audio/wav")})
                answers.append((r.status_code, r.json()))
            return answers, list(rt.registry.models)

    answers, loaded = run(scenario())
    assert [status for status, _ in answers] == [413, 400, 413, 400], answers
    for _, body in answers:
        assert isinstance(body["error"]["message"], str) and body["error"]["type"], body
    assert "more than 40000000 pixels" in answers[0][1]["error"]["message"]
    assert "WAV header declares 4294967040 bytes" in answers[2][1]["error"]["message"]
    assert loaded == []  # refused before any model was touched
