"""Diffusion overhead: steps/s of `POST /v1/images/generations` on `corral serve` vs the same pipeline
called in-process (``DiffusionPipeline.from_pretrained`` + ``pipe(...)``), same prompt, size, steps
and seed. Both are timed end to end (text encoding, the diffusion loop, VAE decode; corral's side
also PNG encoding, base64, JSON, HTTP), so steps/s = the loop's steps / the request's seconds.
Runs alternate between the two; medians are compared. Target: corral within 5%.

The model: the tiny random-weight Stable Diffusion the tests build (default), or --model FOLDER
(any text-to-image pipeline corral runs). The server is started by this script on a free port with
its own CORRAL_HOME; one warm-up request each side is discarded.

    python benchmarks/bench_diffusion.py [--reps 5] [--steps 20] [--size 64x64] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import free_port, guard_processes, print_environment, server

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red bicycle"


def in_process(folder: Path) -> Any:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def loop_steps(pipe: Any, width: int, height: int, steps: int) -> int:
    """How many steps the pipeline's loop runs for ``steps`` (PNDM runs one more)."""
    ran = [0]

    def count(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        ran[0] += 1
        return tensors

    pipe(PROMPT, width=width, height=height, num_inference_steps=steps, callback_on_step_end=count)
    return ran[0]


def time_in_process(pipe: Any, width: int, height: int, steps: int, seed: int) -> float:
    import torch

    started = time.perf_counter()
    pipe(PROMPT, width=width, height=height, num_inference_steps=steps,
         generator=torch.Generator("cpu").manual_seed(seed)).images[0].load()
    return time.perf_counter() - started


def time_http(client: httpx.Client, size: str, steps: int, seed: int) -> float:
    started = time.perf_counter()
    r = client.post("/v1/images/generations", json={"model": "bench", "prompt": PROMPT, "size": size,
                                                     "steps": steps, "seed": seed})
    r.raise_for_status()
    assert r.json()["data"][0]["b64_json"]
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", default="64x64")
    ap.add_argument("--model", type=Path, help="a diffusers text-to-image folder (default: the tiny test pipeline)")
    args = ap.parse_args()
    guard_processes()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-diffusion-") as tmp:
        folder = args.model
        if folder is None:
            sys.path.insert(0, str(ROOT))
            from tests.fixtures.tiny_media import build_stable_diffusion

            folder = build_stable_diffusion(Path(tmp) / "sd").path
        env = {**os.environ, "CORRAL_HOME": str(Path(tmp) / "home"), "CORRAL_CONFIG": str(Path(tmp) / "none.toml"),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "corral", "pull", str(folder), "--name", "bench"], env=env, check=True,
                       capture_output=True)
        pipe = in_process(folder)
        loop = loop_steps(pipe, width, height, args.steps)
        print_environment("diffusers", "torch", extra=f"model={folder.name}  size={args.size}  steps={args.steps} "
                          f"(loop {loop})  reps={args.reps}")
        port = free_port()
        argv = [sys.executable, "-m", "corral", "serve", "--port", str(port), "--models", "bench"]
        with server("corral", argv, f"http://127.0.0.1:{port}/ready", env=env), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            time_http(client, args.size, args.steps, 0)  # warm-up: first request, first allocations
            time_in_process(pipe, width, height, args.steps, 0)
            corral, direct = [], []
            for rep in range(args.reps):  # alternate, so drifts in machine load hit both
                corral.append(time_http(client, args.size, args.steps, rep + 1))
                direct.append(time_in_process(pipe, width, height, args.steps, rep + 1))
    http_rate, own_rate = loop / statistics.median(corral), loop / statistics.median(direct)
    print(f"\n| path | median s/image | steps/s |\n|---|---:|---:|\n"
          f"| corral POST /v1/images/generations | {statistics.median(corral):.3f} | {http_rate:.2f} |\n"
          f"| pipeline in-process | {statistics.median(direct):.3f} | {own_rate:.2f} |")
    overhead = 1 - http_rate / own_rate
    print(f"\noverhead {overhead * 100:+.1f}% (target <= 5%): {'ok' if overhead <= 0.05 else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
