"""Audio and video classifiers through transformers: ``*ForAudioClassification`` (AST, wav2vec2 /
HuBERT heads) with the model's feature extractor, the audio resampled to its sampling rate; and
``*ForVideoClassification`` (VideoMAE-style) with its PIL image processor, ``num_frames`` frames
sampled evenly from the clip the door decoded. Softmax over the labels (sigmoid for a
multi-label head), best first. Each clip's features are made on their own and only clips whose
features have the same shape share a forward pass, so a batched request scores like a solo one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.engines.transformers.loading import TorchTaskHandler, same_shape_batches
from corral.tasks import (
    ClassifyAudioRequest,
    ClassifyAudioResult,
    ClassifyVideoRequest,
    ClassifyVideoResult,
)

BATCH = 16


def ranked(model: Any, features: Sequence[Any], device: str) -> list[list[tuple[str, float]]]:
    """Each input's labels with their probabilities, best first, from per-input ``features``."""
    import torch

    config = model.config
    names = config.id2label
    multi = config.problem_type == "multi_label_classification"
    found: list[list[tuple[str, float]]] = [[] for _ in features]
    with torch.inference_mode():
        for start in range(0, len(features), BATCH):
            chunk = features[start:start + BATCH]
            for members, batch in same_shape_batches(chunk, device, model.dtype):
                logits = model(**batch).logits.float().cpu()
                probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
                for i, row in zip(members, probs, strict=True):
                    found[start + i] = sorted(((names.get(j, f"LABEL_{j}"), float(p)) for j, p in enumerate(row)),
                                              key=lambda x: -x[1])
    return found


class AudioClassifierHandler(TorchTaskHandler):
    auto_class = "AutoModelForAudioClassification"
    uses_tokenizer = False

    def loaded(self) -> None:
        from transformers import AutoFeatureExtractor

        self.extractor = AutoFeatureExtractor.from_pretrained(  # type: ignore[no-untyped-call]
            str(self.path), trust_remote_code=self.options.trust.trust_remote_code)
        self.sampling_rate = int(getattr(self.extractor, "sampling_rate", 16000) or 16000)

    def classify_audio(self, request: ClassifyAudioRequest) -> ClassifyAudioResult:
        from corral.audio import resample

        features = [self.extractor([resample(audio, self.sampling_rate).samples], sampling_rate=self.sampling_rate,
                                   return_tensors="pt") for audio in request.audios]
        return ClassifyAudioResult(ranked(self.model, features, self.device))


class VideoClassifierHandler(TorchTaskHandler):
    auto_class = "AutoModelForVideoClassification"
    uses_tokenizer = False
    uses_image_processor = True

    def classify_video(self, request: ClassifyVideoRequest) -> ClassifyVideoResult:
        frames = int(getattr(self.model.config, "num_frames", 16) or 16)
        features = [self.processor([[video.frames[i] for i in _indices(len(video.frames), frames)]],
                                   return_tensors="pt") for video in request.videos]
        return ClassifyVideoResult(ranked(self.model, features, self.device))


def _indices(available: int, wanted: int) -> list[int]:
    """``wanted`` frame indices spread over ``available`` frames, repeating frames of a short clip."""
    from corral.video import even_indices

    if available >= wanted:
        return even_indices(available, wanted)
    return [i * available // wanted for i in range(wanted)]
