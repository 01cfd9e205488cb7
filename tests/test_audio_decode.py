"""corral.audio's decoding of cut-short files: a WAV shorter than its header and an MP3 whose Xing
tag declares more frames than it holds are refused as truncated (with or without an ID3v2 tag in
front); Ogg/Opus, a stream of self-contained pages, decodes to the pages it holds; whole files
decode to their length."""

from __future__ import annotations

import numpy as np
import pytest

from corral.audio import decode_audio, encode_audio
from corral.media import BadMediaError
from corral.media_tasks import Audio

RATE = 16000


@pytest.fixture(scope="module")
def tone() -> Audio:
    t = np.arange(RATE * 3) / RATE
    return Audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)


def id3(payload: bytes) -> bytes:
    """An ID3v2.4 tag holding ``payload`` (its size syncsafe, 7 bits a byte)."""
    size = len(payload)
    return b"ID3\x04\x00\x00" + bytes((size >> s) & 0x7F for s in (21, 14, 7, 0)) + payload


def test_a_cut_mp3_with_a_frame_count_is_truncated(tone: Audio) -> None:
    data = encode_audio(tone, "mp3")
    assert b"Xing" in data[:200] or b"Info" in data[:200]  # the encoder wrote its frame count
    whole = decode_audio(data)
    assert abs(len(whole.samples) - len(tone.samples)) < RATE // 10
    assert len(decode_audio(id3(b"\0" * 300) + data).samples) == len(whole.samples)
    for cut in (data[: len(data) // 2], id3(b"Info" + b"\0" * 300) + data[: len(data) // 2]):
        with pytest.raises(BadMediaError, match="the MP3 file is truncated: its header declares"):
            decode_audio(cut)


def test_a_cut_wav_is_truncated_and_a_cut_opus_is_shorter(tone: Audio) -> None:
    wav = encode_audio(tone, "wav")
    with pytest.raises(BadMediaError, match="the WAV file is truncated"):
        decode_audio(wav[: len(wav) // 2])
    opus = encode_audio(tone, "opus")
    whole, half = decode_audio(opus), decode_audio(opus[: len(opus) // 2])
    assert 0 < len(half.samples) < len(whole.samples)
