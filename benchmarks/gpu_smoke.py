"""Every runnable task once on a device, through corral's runtime, on tiny random-weight models built
from configs (the test fixtures): chat, complete, embed, rerank, classify_text (own labels and zero-shot),
classify_tokens, answer_question, translate, summarize, classify_image, detect_objects, segment_image,
describe_image (a captioner and an image-text chat model), chat with an image, rerank on a
sentence-transformers CrossEncoder, translation with language codes (NLLB-style), panoptic / instance
segmentation (Mask2Former), audio classification (AST), video classification (VideoMAE), transcribe (a tiny
Whisper and a tiny CTC model through transformers' pipeline, and the real Whisper base through faster-whisper:
CTranslate2 on CUDA in the --dtype compute type), speak (a tiny VITS; the real Piper voice, on CUDA where
onnxruntime has the provider, else on the CPU with a warning), generate_image (Stable Diffusion, fp16 on CUDA)
and generate_video (TextToVideoSD). Prints one line per task (ok / FAILED with the error, seconds) and exits 1
if any failed.

Meant for a lent GPU machine (`--device cuda`, the default when CUDA is available); with `--device cpu` it
checks the same paths on any machine. No assertion on timing; the figures are for the note.

    python benchmarks/gpu_smoke.py [--device cuda|cpu] [--dtype float16]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]


def _png() -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (48, 40), (200, 30, 30))
    ImageDraw.Draw(image).rectangle((5, 5, 24, 20), fill=(10, 200, 10))
    out = io.BytesIO()
    image.save(out, format="PNG")
    from corral.media import decode_image

    return decode_image(out.getvalue())


def _models(root: Path) -> dict[str, Path]:
    from tests.fixtures import tiny_av_classifiers as av
    from tests.fixtures import tiny_diffusion, tiny_rerankers, tiny_segmenters, tiny_speech, tiny_translators, tiny_tts
    from tests.fixtures import tiny_media as media
    from tests.fixtures import tiny_models as text
    from tests.fixtures import tiny_vlm as vlm

    builders: dict[str, Callable[[Path], Any]] = {
        "llama": lambda d: text.build_causal_lm("llama", d), "minilm": media.build_sentence_transformer,
        "cross": text.build_cross_encoder, "cls": text.build_bert_classifier, "nli": text.build_nli_classifier,
        "ner": text.build_token_classifier, "qa": text.build_question_answering, "t5": text.build_t5,
        "vit": media.build_vit, "detr": media.build_detr, "seg": media.build_segformer,
        "cap": media.build_captioner, "llava": vlm.build_llava, "st-cross": tiny_rerankers.build_crossencoder,
        "nllb": tiny_translators.build_nllb, "m2f": tiny_segmenters.build_mask2former,
        "ast": av.build_ast, "vmae": av.build_videomae,
        "whisper": tiny_speech.build_whisper_asr, "ctc": tiny_speech.build_ctc,
        "vits": tiny_tts.build_vits,
        "sd": media.build_stable_diffusion, "t2v": tiny_diffusion.build_text_to_video,
    }
    models = {name: build(root / name).path for name, build in builders.items()}
    return {**models, "piper": tiny_tts.joe_voice()}  # the real Piper voice: onnxruntime's CUDA provider


def _calls(image: Any) -> list[tuple[str, str, Any]]:
    from tests.fixtures.tiny_av_classifiers import chord_wav, colour_mp4

    from corral import tasks as t
    from corral.audio import decode_audio
    from corral.video import decode_video

    greedy = t.Sampling(max_tokens=4, temperature=0.0)
    return [
        ("chat", "llama", t.ChatRequest((t.Message("user", "hello"),), sampling=greedy)),
        ("complete", "llama", t.CompletionRequest("hello", sampling=greedy)),
        ("embed", "minilm", t.EmbedRequest(("hello",))),
        ("rerank", "cross", t.RerankRequest.of("cat", ["a cat", "a dog"])),
        ("classify_text", "cls", t.ClassifyTextRequest(("hello",))),
        ("classify_text", "nli", t.ClassifyTextRequest(("hello",), ("a", "b"))),
        ("classify_tokens", "ner", t.ClassifyTokensRequest(("Tim Cook met Apple",))),
        ("answer_question", "qa", t.AnswerQuestionRequest((("who", "the cat sat"),))),
        ("translate", "t5", t.TranslateRequest("hello", "English", "French", sampling=greedy)),
        ("summarize", "t5", t.SummarizeRequest("hello world", sampling=greedy)),
        ("classify_image", "vit", t.ClassifyImageRequest((image,))),
        ("detect_objects", "detr", t.DetectObjectsRequest((image,), 0.0)),
        ("segment_image", "seg", t.SegmentImageRequest((image,))),
        ("describe_image", "cap", t.DescribeImageRequest(image, sampling=greedy)),
        ("describe_image", "llava", t.DescribeImageRequest(image, sampling=greedy)),
        ("chat", "llava", t.ChatRequest((t.Message("user", "what?", parts=(t.ImagePart(image), "what?")),),
                                        sampling=greedy)),
        ("rerank", "st-cross", t.RerankRequest.of("cat", ["a cat", "a dog"])),
        ("translate", "nllb", t.TranslateRequest("hello", "eng_Latn", "fra_Latn", sampling=greedy)),
        ("segment_image", "m2f", t.SegmentImageRequest((image,))),
        ("segment_image", "m2f", t.SegmentImageRequest((image,), subtask="instance", threshold=0.0)),
        ("classify_audio", "ast", t.ClassifyAudioRequest((decode_audio(chord_wav()),))),
        ("classify_video", "vmae", t.ClassifyVideoRequest((decode_video(colour_mp4()),))),
        ("transcribe", "whisper", t.TranscribeRequest(_speech(), timestamps="segment")),
        ("transcribe", "ctc", t.TranscribeRequest(_speech(), timestamps="word")),
        ("transcribe", "whisper-base", t.TranscribeRequest(_speech(), timestamps="word")),
        ("speak", "vits", t.SpeakRequest("hello there. a second sentence.")),
        ("speak", "piper", t.SpeakRequest("Hello there. A second sentence.")),  # CPU without onnxruntime-gpu
        ("generate_image", "sd", t.GenerateImageRequest("a cat", width=32, height=32, n=2, steps=2, seed=1)),
        ("generate_video", "t2v", t.GenerateVideoRequest("a cat", width=16, height=16, frames=4, steps=2, seed=1)),
    ]


def _speech() -> Any:
    """Two seconds of a tone (the tiny random models) that Whisper base hears as silence or noise."""
    from tests.fixtures.tiny_speech import tone

    from corral.tasks import Audio

    return Audio(tone(2.0), 22050)


async def _run_all(runtime: Any, calls: list[tuple[str, str, Any]]) -> int:
    from corral.runtime.dispatcher import CallInfo, Door
    from corral.tasks import TASKS, Task

    failed = 0
    async with runtime:
        for task_name, model, request in calls:
            task, started = Task(task_name), time.perf_counter()
            try:
                if task is Task.SPEAK:  # audio chunks, not text
                    chunks = [c async for c in runtime.run(task, model, request, CallInfo(Door.CLI, "gpu_smoke"))]
                    assert sum(len(c.samples) for c in chunks) > 0, "no audio"
                elif TASKS[task].streams:  # text, or progress steps and a result
                    [c async for c in runtime.run(task, model, request, CallInfo(Door.CLI, "gpu_smoke"))]
                else:
                    await runtime.call(task, model, request, CallInfo(Door.CLI, "gpu_smoke"))
                print(f"ok      {task_name:16} {model:7} {time.perf_counter() - started:7.3f} s", flush=True)
            except Exception as exc:  # reported, then counted
                failed += 1
                print(f"FAILED  {task_name:16} {model:7} {type(exc).__name__}: {exc}", flush=True)
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 for the torch engines")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print("no CUDA device here: nothing to check (run with --device cpu to check the same paths on the CPU)")
        return 0
    with tempfile.TemporaryDirectory(prefix="corral-gpu-smoke-") as tmp:
        root = Path(tmp)
        import os

        os.environ["CORRAL_HOME"] = str(root / "home")
        os.environ["CORRAL_CONFIG"] = str(root / "config.toml")
        from corral.config import load_settings
        from corral.engines.base import LoadOptions
        from corral.models.refs import parse_ref
        from corral.models.resolve import Resolver
        from corral.models.store import Store
        from corral.runtime.runtime import RuntimeOptions, build_runtime

        settings = load_settings()
        store = Store(settings.manifest_path)
        for name, path in _models(root / "models").items():
            Resolver(settings, store).register(parse_ref(str(path)), name=name, explicit_name=True, progress=False)
        Resolver(settings, store).resolve("whisper-base", progress=False)  # joined from its two packages
        options = RuntimeOptions(load=LoadOptions(device=device, dtype=args.dtype), budget_bytes=2**40,
                                 max_loaded=2, record_memory=False)
        print(f"device {device}, dtype {args.dtype or 'as stored'}, torch {torch.__version__}", flush=True)
        failed = asyncio.run(_run_all(build_runtime(settings, store, options), _calls(_png())))
    print(f"{failed} failed" if failed else "every task ran")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
