"""Image models through transformers, with their PIL image processors (no torchvision):
classify_image (``*ForImageClassification``: softmax over the labels, sigmoid for a multi-label
head), detect_objects (DETR-style ``*ForObjectDetection``: the processor's own post-processing,
boxes in pixels of each input image) and segment_image (semantic, instance and panoptic, see
:mod:`corral.engines.transformers.segment`). Batches of ``BATCH`` images per forward pass; the
runtime merges concurrent requests into one call."""

from __future__ import annotations

from typing import Any

from corral.engines.transformers.loading import TorchTaskHandler
from corral.engines.transformers.segment import SEMANTIC_HEAD, Segmenter, segmentation_class, subtasks_of
from corral.errors import UnsupportedTaskError
from corral.tasks import (
    ClassifyImageRequest,
    ClassifyImageResult,
    Detection,
    DetectObjectsRequest,
    DetectObjectsResult,
    SegmentImageRequest,
    SegmentImageResult,
    Task,
)

BATCH = 16


class VisionHandler(TorchTaskHandler):
    auto_class = "AutoModelForImageClassification"
    uses_tokenizer = False
    uses_image_processor = True

    segmenter: Segmenter | None = None

    def model_class(self) -> str:
        task = self.info.tasks[0]
        if task == Task.SEGMENT_IMAGE.value:
            return segmentation_class(self.info.architecture)
        return "AutoModelForObjectDetection" if task == Task.DETECT_OBJECTS.value else self.auto_class

    def unload(self) -> None:
        self.segmenter = None
        super().unload()

    def _forward(self, images: list[Any]) -> Any:
        import torch

        features = self.processor(images, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            return self.model(**features)

    def classify_image(self, request: ClassifyImageRequest) -> ClassifyImageResult:
        import torch

        if request.labels:
            raise UnsupportedTaskError(f"{self.path.name} classifies images with its own labels only: candidate "
                                       "labels need an image-text model (CLIP, SigLIP)",
                                       "leave out the labels, or ask a CLIP or SigLIP model")
        labels: list[list[tuple[str, float]]] = []
        names = self.model.config.id2label
        multi = self.model.config.problem_type == "multi_label_classification"
        for start in range(0, len(request.images), BATCH):
            logits = self._forward(list(request.images[start:start + BATCH])).logits.float().cpu()
            probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
            labels += [sorted(((names.get(i, f"LABEL_{i}"), float(p)) for i, p in enumerate(row)),
                              key=lambda x: -x[1]) for row in probs]
        return ClassifyImageResult(labels)

    def detect_objects(self, request: DetectObjectsRequest) -> DetectObjectsResult:
        found: list[list[Detection]] = []
        names = self.model.config.id2label
        for start in range(0, len(request.images), BATCH):
            images = list(request.images[start:start + BATCH])
            out = self._forward(images)
            sizes = [(image.height, image.width) for image in images]
            for image, result in zip(images, self.processor.post_process_object_detection(
                    out, threshold=request.threshold, target_sizes=sizes), strict=True):
                found.append(sorted((_detection(names, image, label, score, box) for label, score, box in
                                     zip(result["labels"].tolist(), result["scores"].tolist(),
                                         result["boxes"].tolist(), strict=True)), key=lambda d: -d.score))
        return DetectObjectsResult(found)

    def segment_image(self, request: SegmentImageRequest) -> SegmentImageResult:
        if self.segmenter is None:
            head = segmentation_class(self.info.architecture)
            self.segmenter = Segmenter(self.model, self.processor, self.device, semantic_head=head == SEMANTIC_HEAD,
                                       subtasks=subtasks_of(head, self.processor))
        return SegmentImageResult(self.segmenter.segment(request))


def _detection(names: dict[int, str], image: Any, label: int, score: float, box: list[float]) -> Detection:
    """A detection with its box rounded to pixels and clipped to the image."""
    xmin, ymin, xmax, ymax = (round(v) for v in box)
    width, height = int(image.width), int(image.height)
    return Detection(names.get(label, f"LABEL_{label}"), float(score),
                     (min(max(xmin, 0), width), min(max(ymin, 0), height),
                      min(max(xmax, 0), width), min(max(ymax, 0), height)))
