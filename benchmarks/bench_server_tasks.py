"""Hugging Face task API door under load, 32 concurrent clients, each request one input, to `corral serve`'s
`POST /models/{name}` vs the hand-written wrapper users have today: a minimal FastAPI app whose sync route calls a
transformers `pipeline(...)` per request (FastAPI runs it in its thread pool). --task picks the task:

- text: text classification of one short sentence (`{"inputs": "..."}` -> `[[{label, score}, ...]]`) on a
  BERT-base-size BertForSequenceClassification (hidden 768, 12 layers, 12 heads, intermediate 3072, 3 labels)
  with a WordPiece tokenizer trained here with `tokenizers` on Python's own reference text (pydoc_data.topics)
  plus the benchmark's sentences; the baseline is `pipeline("text-classification", top_k=None)` at
  `POST /classify`;
- image: image classification of one 224x224 JPEG sent as the raw body, as huggingface_hub's
  InferenceClient.image_classification sends it (-> `[{label, score}, ...]`, the top 5) on a ViT-base
  ViTForImageClassification (`ViTConfig()` defaults: hidden 768, 12 layers, 12 heads, patch 16, 224x224; 10
  labels) with a default ViTImageProcessor; the baseline is `pipeline("image-classification")` on the decoded
  image at `POST /classify-image`.

Both models have random weights (torch.manual_seed(0)), are saved with safetensors at the start of the run (in a
temp dir, or cached under --workdir), and reach corral through `corral pull FOLDER --name NAME` into a temporary
CORRAL_HOME. Both servers run on uvicorn (uvloop, httptools) in their own subprocess on a free 127.0.0.1 port, one
at a time; the baseline is this script re-run with --serve-baseline.

(1) throughput: --rounds rounds of --clients concurrent requests (each round waits for all of its requests), after
    a warm-up round; requests/s and the ratio corral / baseline (text target >= 3x; image: the figure is
    reported, on 2 cores a base-size ViT gains little from batching), and the inputs per forward pass corral
    used (its /metrics: corral_batch_inputs_count / _sum for the model and task);
(2) corral's single-request overhead: sequential requests on one keep-alive connection, timed in turns (--block
    requests a turn) with the same pipeline called in this process on the same inputs; the difference of the
    p50s as a percentage of the in-process p50 (target <= 5%).
Every answer is checked (labels best first, scores summing to 1, or at most 1 for the top 5 of 10); both servers'
answers to one round of inputs are compared with the in-process pipeline's (scores within 1e-4, the same order).
The CPU other processes used meanwhile is printed (and a busy measurement retried): on a shared 2-core machine
that changes the timings. The bare model's own rate one input at a time and in batches is printed for context.

    python benchmarks/bench_server_tasks.py [--task text|image|both] [--clients 32] [--rounds 20] [--requests 400]
                                            [--block 20] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from bench_http_overhead import Stats, timeit
from harness import BUSY, CpuMeter, RawClient, free_port, guard_processes, print_environment, server
from pydantic import BaseModel
from rounds import Load, Run, batch_metrics, measure_rounds
from task_cases import CASES, Case, build_case

TOLERANCE = 1e-4

# ---------------------------------------------------------------- the baseline server


class Body(BaseModel):  # at module level: FastAPI resolves the handler's (string) annotations here
    inputs: str


def serve_baseline(port: int, folder: str, task: str) -> None:
    """The wrapper people write by hand: FastAPI, one pipeline, called per request in a sync route."""
    import io

    import uvicorn
    from fastapi import Body as Raw
    from fastapi import FastAPI
    from PIL import Image
    from transformers import pipeline

    app = FastAPI()
    classify: Any
    if task == "text":
        classify = pipeline("text-classification", model=folder, top_k=None)

        @app.post("/classify")
        def classify_route(body: Body) -> Any:
            return classify(body.inputs)  # a string with top_k=None: [[{"label", "score"}, ...]], as corral answers

    else:
        classify = pipeline("image-classification", model=folder)

        @app.post("/classify-image")
        def classify_image_route(image: bytes = Raw(media_type="image/jpeg")) -> Any:
            return classify(Image.open(io.BytesIO(image)))  # the top 5 [{"label", "score"}, ...], as corral answers

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on", loop="uvloop", http="httptools")
    uvicorn.Server(config).run()


# ---------------------------------------------------------------- overhead, agreement, context


def overhead(case: Case, port: int, pid: int, pipe: Any, args: argparse.Namespace) -> tuple[Stats, Stats]:
    """corral's POST /models/{name} and the in-process pipeline, sequential, in turns, on the same inputs."""
    client = RawClient("127.0.0.1", port)

    def via_corral(i: int) -> None:
        status, payload = client.request("POST", f"/models/{case.model}", case.body(i), case.content_type)
        if status != 200:
            raise RuntimeError(f"corral: HTTP {status} {payload[:200]!r}")
        case.scores(orjson.loads(payload))

    def in_process(i: int) -> None:
        case.local(pipe, i)

    mine, theirs = itertools.count(), itertools.count()
    try:
        corral, local = timeit([(f"corral POST /models/{case.model}, sequential", lambda: via_corral(next(mine))),
                                ("  in-process pipeline, in turns with it", lambda: in_process(next(theirs)))],
                               args, pid)
    finally:
        client.close()
    return corral, local


def agreement(case: Case, name: str, run: Run, pipe: Any) -> None:
    """The server's answers to one round of inputs vs the in-process pipeline's: scores within TOLERANCE, and
    the labels in the same order wherever the pipeline's scores are more than TOLERANCE apart."""
    worst, flips = 0.0, 0
    for i, got in sorted(run.answers.items()):
        want = case.scores(case.local(pipe, i))
        worst = max([worst] + [abs(got[k] - want[k]) for k in set(got) & set(want)])
        tie = any(a - b <= TOLERANCE for a, b in itertools.pairwise(want.values()))
        flips += list(got) != list(want) and not tie  # both best first (checked by scores)
    ok = bool(run.answers) and worst <= TOLERANCE and not flips
    print(f"{name} vs the in-process pipeline on {len(run.answers)} {case.unit}: max |score difference| "
          f"{worst:.2e}, labels in another order {flips} times: {'agree' if ok else 'DISAGREE'}")


def ceilings(case: Case, pipe: Any, batch: int) -> tuple[float, float, float]:
    """Inputs/s of the pipeline's model in this process one at a time and in batches of ``batch`` (its own
    pre-processing, no HTTP, no pipeline): what batching alone gains on this machine; and the CPU others used."""
    import torch

    def forward(indices: list[int]) -> None:
        with torch.inference_mode():
            pipe.model(**case.features(pipe, indices))

    forward(list(range(batch)))
    with CpuMeter(None) as cpu:
        start = time.perf_counter()
        for i in range(2 * batch):
            forward([i])
        single = 2 * batch / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, 8 * batch, batch):
            forward(list(range(i, i + batch)))
        batched = 8 * batch / (time.perf_counter() - start)
    return single, batched, cpu.other


# ---------------------------------------------------------------- the run


def run_corral(case: Case, folder: str, pipe: Any, args: argparse.Namespace) -> tuple[Run, tuple[Stats, Stats]]:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as home:
        env = {**os.environ, "CORRAL_HOME": home, "CORRAL_CONFIG": str(Path(home) / "config.toml")}
        subprocess.run([sys.executable, "-m", "corral", "pull", folder, "--name", case.model, "--quiet"], env=env,
                       check=True, capture_output=True)
        port = free_port()
        argv = [sys.executable, "-m", "corral", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--models", case.model, "--grace", "2s"]
        with server("corral", argv, f"http://127.0.0.1:{port}/ready", env=env) as (startup, pid):
            print(f"corral: ready in {startup:.1f} s", flush=True)
            run = measure_rounds("corral", port, pid, load(case, f"/models/{case.model}"), args,
                                 metrics=lambda: batch_metrics(port, "corral_batch_inputs", model=case.model,
                                                               task=case.corral_task))
            seq = overhead(case, port, pid, pipe, args)
    return run, seq


def run_baseline(case: Case, folder: str, args: argparse.Namespace) -> Run:
    port = free_port()
    argv = [sys.executable, __file__, "--serve-baseline", str(port), folder, case.task]
    with server("FastAPI + pipeline", argv, f"http://127.0.0.1:{port}/health") as (startup, pid):
        print(f"FastAPI + pipeline: ready in {startup:.1f} s", flush=True)
        return measure_rounds("FastAPI + pipeline", port, pid, load(case, case.baseline_path), args)


def load(case: Case, path: str) -> Load:
    return Load(path, case.body, lambda i, body: case.scores(orjson.loads(body)), case.content_type)


def report(case: Case, ours: Run, theirs: Run, seq: tuple[Stats, Stats], context: tuple[float, float, float],
           args: argparse.Namespace) -> None:
    print(f"\n| {case.title}: server ({args.clients} concurrent clients, one input per request) | requests/s "
          "| p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
    for label, run in ((f"corral POST /models/{case.model}", ours), ("FastAPI + pipeline per request (sync route)",
                                                                      theirs)):
        print(f"| {label} | {run.rate():.1f} | {run.pct(0.5):.1f} | {run.pct(0.99):.1f} | "
              f"{len(run.errors) + len(run.bad)} |")
    ratio = ours.rate() / theirs.rate()
    print(f"| ratio corral / baseline | {ratio:.2f}x | | | |")
    corral, local = seq
    over = corral.pct(0.5) - local.pct(0.5)
    pct = 100 * over / local.pct(0.5)
    print(f"\n| sequential, one request at a time ({args.requests}, in turns of {args.block}) | p50 ms | p99 ms | "
          "mean ms |\n|---|---:|---:|---:|")
    for label, s in ((f"corral POST /models/{case.model}", corral), ("in-process pipeline, in turns with corral",
                                                                     local)):
        print(f"| {label} | {s.pct(0.5):.3f} | {s.pct(0.99):.3f} | {s.mean():.3f} |")
    print(f"| corral over in-process | {over:+.3f} ({pct:+.1f}%) | {corral.pct(0.99) - local.pct(0.99):+.3f} | "
          f"{corral.mean() - local.mean():+.3f} |\n")
    single, batched, other = context
    print(f"corral's inputs per forward pass during the throughput run: {ours.per_pass or float('nan'):.1f}")
    if case.target is None:
        print(f"throughput: corral {ratio:.2f}x the baseline (no target for this task: reported as measured)")
    else:
        print(f"throughput target corral >= {case.target:g}x the baseline: "
              f"{'met' if ratio >= case.target else 'NOT met'} ({ratio:.2f}x)")
    print(f"overhead target <= 5% p50 over in-process: {'met' if pct <= 5 else 'NOT met'} ({pct:+.1f}%)")
    print(f"context, no HTTP: the bare model in this process classifies {single:.1f} {case.unit}/s one at a time and "
          f"{batched:.1f}/s in batches of {args.clients} (batching alone gains {batched / single:.2f}x)")
    busy = max(ours.other_cpu, theirs.other_cpu, corral.other_cpu, other)
    print(f"(most CPU other processes used during a measurement: {busy:.2f} cores"
          + ("; the machine was busy, rerun when idle)" if busy > BUSY else ")"))


def run_case(case: Case, root: Path, args: argparse.Namespace) -> None:
    """Build (or reuse) the case's model, measure corral and the baseline, compare their answers, report."""
    from transformers import pipeline

    folder = root / case.folder
    print(f"\n== {case.title}\nmodel: {build_case(case, folder, args.vocab)}", flush=True)
    make: Any = pipeline  # the task is a variable: no overload of its stubs matches
    pipe = make(case.hf_task, model=str(folder), **case.pipeline_kwargs)
    ours, seq = run_corral(case, str(folder), pipe, args)
    theirs = run_baseline(case, str(folder), args)
    print()
    agreement(case, "corral", ours, pipe)
    agreement(case, "the baseline", theirs, pipe)
    report(case, ours, theirs, seq, ceilings(case, pipe, args.clients), args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=("text", "image", "both"), default="text",
                    help="text classification (BERT-base), image classification (ViT-base) or both, one after the "
                         "other")
    ap.add_argument("--clients", type=int, default=32, help="concurrent requests per round")
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20: 640 requests)")
    ap.add_argument("--requests", type=int, default=400, help="timed sequential requests per case for the overhead")
    ap.add_argument("--warmup", type=int, default=20, help="sequential warm-up requests per case")
    ap.add_argument("--block", type=int, default=20, help="sequential requests per turn")
    ap.add_argument("--retries-if-busy", type=int, default=2,
                    help="measure again when other processes used more than 0.25 cores meanwhile")
    ap.add_argument("--vocab", type=int, default=8000, help="WordPiece vocabulary size asked of the trainer")
    ap.add_argument("--workdir", type=Path, help="build (or reuse) the models here instead of a temp dir")
    ap.add_argument("--serve-baseline", nargs=3, metavar=("PORT", "FOLDER", "TASK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1], args.serve_baseline[2])
        return
    guard_processes()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import torch

    print_environment("torch", "transformers", "tokenizers", "pillow", "fastapi", "uvicorn", "uvloop", "httptools",
                      extra=f"torch threads={torch.get_num_threads()}")
    print(f"settings: task={args.task}  clients={args.clients}  rounds={args.rounds} ({args.clients * args.rounds} "
          f"requests after a warm-up round)  sequential: {args.warmup} warm-up + {args.requests} timed per case, "
          f"turns of {args.block}", flush=True)
    with tempfile.TemporaryDirectory(prefix="corral-bench-model-") as tmp:
        for case in CASES:
            if args.task in (case.task, "both"):
                run_case(case, args.workdir or Path(tmp), args)


if __name__ == "__main__":
    main()
