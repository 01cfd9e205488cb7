"""Audio a request carries or a model makes, through maintained libraries only: decoding with
soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3) and, for what libsndfile lacks (m4a/AAC,
WebM/Opus, audio tracks of video files), PyAV (FFmpeg); mixing to mono and resampling with soxr;
encoding speech as WAV, FLAC, MP3, Opus (Ogg) with soundfile, AAC with PyAV, or raw 16-bit PCM;
streaming speech: a WAV read block by block from a pipe (the standard library's ``wave``), raw PCM
resampled as a stream (soxr's ResampleStream).
Every way audio can be bad is named in the error (empty, not audio, truncated, a codec no library
here decodes: 400), and audio longer than the limit is refused (413) from its header where it has
one, else as soon as decoding passes the limit. The libraries are imported here only (``corral[audio]``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO, Any

from corral.errors import MissingDependencyError
from corral.media import BadMediaError, MediaTooLargeError
from corral.media_tasks import Audio

DEFAULT_MAX_SECONDS = 3600.0
FORMATS = ("wav", "flac", "mp3", "opus", "aac", "pcm")  # OpenAI's speech response formats
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg",
               "aac": "audio/aac", "pcm": "audio/pcm"}
PCM_RATE = 24_000  # OpenAI's raw PCM: 24 kHz, 16-bit signed little-endian, mono


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"audio needs the Python package {module!r}, which is not installed",
                                     "install it with: pip install 'corral[audio]'") from None


def decode_audio(data: bytes, *, rate: int | None = None, max_seconds: float = DEFAULT_MAX_SECONDS) -> Audio:
    """Mono float32 audio from the bytes of an audio file, resampled to ``rate`` when given."""
    if not data:
        raise BadMediaError("the audio is empty")
    audio = _with_soundfile(data, max_seconds)
    if audio is None:
        audio = _with_pyav(data, max_seconds)
    return resample(audio, rate) if rate else audio


XING_WINDOW = 200  # an MP3's Xing / Info tag sits in its first frame, after the header and side info


BLOCK_FRAMES = 1 << 16  # frames read at a time: memory follows the audio there is, never what a header claims


def _with_soundfile(data: bytes, max_seconds: float) -> Audio | None:
    """The audio through libsndfile, or None when libsndfile does not know the format. A WAV whose
    header claims more than the limit is refused (413) and one shorter than its RIFF header says is
    truncated (400), both before decoding; so is a file it opens but cannot read to the end. The
    samples are read a block at a time and mixed to mono as they come, so a header claiming billions
    of frames (a FLAC STREAMINFO, ...) allocates nothing: the limit is checked on what decodes."""
    sf = _need("soundfile")
    try:
        opened = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    with opened as f:
        _check_length(f.frames / f.samplerate if f.samplerate else 0.0, max_seconds)
        _check_riff(data, max_seconds)
        samples = _read_mono(f, sf, max_seconds)
        rate = int(f.samplerate)
        _check_xing(data, f.format, int(f.frames), len(samples))
    if not len(samples):
        raise BadMediaError("the audio has no samples (empty or truncated)")
    return Audio(samples, rate)


def _read_mono(f: Any, sf: Any, max_seconds: float) -> Any:
    """``f``'s samples as one mono float32 array, read ``BLOCK_FRAMES`` at a time."""
    np = _need("numpy")
    parts: list[Any] = []
    total = 0
    try:
        while len(block := f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)):
            parts.append(block.mean(axis=1, dtype=np.float32))
            total += len(block)
            _check_length(total / f.samplerate if f.samplerate else 0.0, max_seconds)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise BadMediaError(f"the audio is truncated or damaged ({str(exc).strip()})") from None
    return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0), dtype=np.float32)


def _check_riff(data: bytes, max_seconds: float) -> None:
    """A WAV whose data chunk claims more audio than the limit is too long (413), from its header; one
    shorter than the size its RIFF header declares was cut off (400; libsndfile reads what is there
    without complaint). Streamed WAVs declare an unknown size (corral and FFmpeg write 0xFFFFFFFF,
    espeak-ng 0x7FFFF000): a data size of 0, 0xFFFFFFFF or 0x7F000000-0x7FFFFFFF claims no length."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    claim = _wav_data_claim(data)
    if claim is not None:
        size, byte_rate = claim
        streamed = size in (0, 0xFFFFFFFF) or 0x7F000000 <= size <= 0x7FFFFFFF
        if not streamed and byte_rate and size / byte_rate > max_seconds:
            raise MediaTooLargeError(f"the WAV header declares {size} bytes of audio ({size / byte_rate:.1f} s); the "
                                     f"limit is {max_seconds:g} s", "send a shorter clip (the server's "
                                     "--max-audio-seconds)")
    declared = int.from_bytes(data[4:8], "little")
    if 0 < declared < 0x7F000000 and declared + 8 > len(data):
        raise BadMediaError(f"the WAV file is truncated: its header declares {declared + 8} bytes, it has {len(data)}")


def _wav_data_claim(data: bytes) -> tuple[int, int] | None:
    """(the size the ``data`` chunk declares, the ``fmt `` chunk's bytes per second), walking at most
    64 chunks of the RIFF header; None when either is missing."""
    pos, byte_rate = 12, 0
    for _ in range(64):
        if pos + 8 > len(data):
            return None
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if kind == b"fmt " and pos + 20 <= len(data):
            byte_rate = int.from_bytes(data[pos + 16:pos + 20], "little")
        elif kind == b"data":
            return size, byte_rate
        pos += 8 + size + (size & 1)
    return None


def _check_xing(data: bytes, kind: str, declared: int, got: int) -> None:
    """An MP3 whose encoder wrote its frame count (a Xing / Info tag in the first frame, which libsndfile
    reports as its length) but that decodes to clearly fewer samples was cut off. Without the tag the
    length is an estimate from the file's size, and a shorter file is simply a shorter stream."""
    start = _after_id3(data)
    first_frame = data[start:start + XING_WINDOW]
    if kind != "MP3" or not (b"Xing" in first_frame or b"Info" in first_frame):
        return
    if got < declared * 0.98:
        raise BadMediaError(f"the MP3 file is truncated: its header declares {declared} samples, it holds {got}")


def _after_id3(data: bytes) -> int:
    """Where an MP3's first frame starts: after its ID3v2 tag (10-byte header, a syncsafe size, an
    optional 10-byte footer), if it has one."""
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = 0
    for byte in data[6:10]:
        size = (size << 7) | (byte & 0x7F)
    return 10 + size + (10 if data[5] & 0x10 else 0)


def _with_pyav(data: bytes, max_seconds: float) -> Audio:
    av = _need("av")
    np = _need("numpy")
    chunks: list[Any] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise BadMediaError("the file has no audio track")
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                raise BadMediaError(f"the audio codec of this {container.format.long_name} file is not one corral "
                                    "can decode (FFmpeg has no decoder for it)",
                                    "send WAV (PCM), FLAC, MP3, OGG/Vorbis or Opus, M4A/AAC or WebM/Opus")
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            if container.duration is not None:
                _check_length(container.duration / 1_000_000, max_seconds)
            mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            total = 0
            for frame in container.decode(stream):
                for out in mono.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].shape[0]
                _check_length(total / rate if rate else 0.0, max_seconds)
    except (BadMediaError, MediaTooLargeError):
        raise
    except av.error.FFmpegError as exc:
        raise BadMediaError(f"the data is not audio corral can decode ({type(exc).__name__}: {exc})",
                            "send WAV, FLAC, MP3, OGG, M4A/AAC or WebM/Opus") from None
    if not chunks or not rate:
        raise BadMediaError("the audio has no samples (empty or truncated)")
    return Audio(np.concatenate(chunks).astype(np.float32), rate)


def _check_length(seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise MediaTooLargeError(f"the audio is {seconds:.1f} s long; the limit is {max_seconds:g} s",
                                 "send a shorter clip (the server's --max-audio-seconds)")


def resample(audio: Audio, rate: int) -> Audio:
    """``audio`` at ``rate`` samples per second (soxr, high quality)."""
    if audio.sample_rate == rate:
        return audio
    soxr = _need("soxr")
    np = _need("numpy")
    samples = soxr.resample(audio.samples, audio.sample_rate, rate, quality="HQ")
    return Audio(np.asarray(samples, dtype=np.float32), rate)


def encode_audio(audio: Audio, fmt: str) -> bytes:
    """The bytes of ``audio`` as ``fmt`` (one of :data:`FORMATS`)."""
    np = _need("numpy")
    if fmt == "pcm":
        samples = resample(audio, PCM_RATE).samples
        return bytes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    if fmt == "aac":
        return _encode_aac(audio)
    sf = _need("soundfile")
    kinds = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"),
             "opus": ("OGG", "OPUS")}
    if fmt not in kinds:
        raise BadMediaError(f"cannot encode audio as {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    if fmt == "opus" and audio.sample_rate not in (8000, 12000, 16000, 24000, 48000):
        audio = resample(audio, 48000)  # the rates Opus takes
    out = io.BytesIO()
    container, subtype = kinds[fmt]
    sf.write(out, np.clip(audio.samples, -1.0, 1.0), audio.sample_rate, format=container, subtype=subtype)
    return out.getvalue()


def _encode_aac(audio: Audio) -> bytes:
    av = _need("av")
    np = _need("numpy")
    out = io.BytesIO()
    with av.open(out, mode="w", format="adts") as container:
        stream = container.add_stream("aac", rate=audio.sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.clip(audio.samples, -1, 1).reshape(1, -1).astype(np.float32),
                                           format="flt", layout="mono")
        frame.sample_rate = audio.sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header for a stream of unknown length (sizes 0xFFFFFFFF, as streaming
    servers write them), so audio can be sent as it is synthesised."""
    import struct

    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) +
            b"data" + struct.pack("<I", 0xFFFFFFFF))


def pcm16(samples: Any) -> bytes:
    """Float samples as 16-bit signed little-endian PCM."""
    np = _need("numpy")
    return bytes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def wav_blocks(stream: IO[bytes], block_seconds: float = 0.25) -> Iterator[Audio]:
    """Mono float32 blocks of a 16-bit PCM WAV read from ``stream`` (a pipe: never seeked) as its
    bytes arrive, with the standard library's ``wave``; a header that claims more data than comes
    (a stream of unknown length) ends at end of input."""
    import wave

    np = _need("numpy")
    try:
        reader = wave.open(stream, "rb")  # noqa: SIM115 - read lazily below; closing it leaves the pipe open
    except (wave.Error, EOFError) as exc:
        raise BadMediaError(f"the audio stream is not a WAV ({exc})") from None
    with reader:
        rate, width, channels = reader.getframerate(), reader.getsampwidth(), reader.getnchannels()
        if width != 2 or not rate:
            raise BadMediaError(f"the WAV stream holds {8 * width}-bit samples; 16-bit PCM expected")
        frames = max(1, int(rate * block_seconds))
        while data := reader.readframes(frames):
            samples = np.frombuffer(data[: len(data) - len(data) % (2 * channels)], dtype="<i2")
            yield Audio(samples.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0, rate)


class PcmStream:
    """Chunks of audio at one rate as OpenAI's raw PCM (24 kHz, 16-bit signed little-endian mono),
    resampled as one continuous stream (soxr's ResampleStream), so chunk edges leave no seams."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._stream = None if rate == PCM_RATE else _need("soxr").ResampleStream(
            rate, PCM_RATE, 1, dtype="float32", quality="HQ")

    def feed(self, samples: Any) -> bytes:
        np = _need("numpy")
        samples = np.asarray(samples, dtype=np.float32)
        return pcm16(samples if self._stream is None else self._stream.resample_chunk(samples))

    def end(self) -> bytes:
        """What the resampler still holds, at the end of the stream."""
        np = _need("numpy")
        if self._stream is None:
            return b""
        return pcm16(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
