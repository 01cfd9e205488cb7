"""Image segmentation through transformers' PIL image processors (no torchvision, no timm):
which Auto class loads a segmentation model, which subtasks it does (a semantic head:
semantic; a universal head, e.g. Mask2Former, MaskFormer or DETR panoptic: those its processor
post-processes, panoptic first as Hugging Face's pipeline picks), the forward pass and the
processor's own post-processing, and every segment's mask as a PNG of the input image's size.

Each image is preprocessed on its own and only images whose tensors have the same shape share a
forward pass, so no image is padded for another: a batched request segments like a solo one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.errors import UnsupportedTaskError
from corral.tasks import Segment, SegmentImageRequest

BATCH = 16
SUBTASK_ORDER = ("panoptic", "instance", "semantic")  # a universal head's default: the first it has
SEMANTIC_HEAD = "AutoModelForSemanticSegmentation"
UNSUPPORTED = {"oneformer": "a OneFormer model needs its subtask as a tokenised text prompt, which corral does not "
                            "send yet"}


def segmentation_class(architecture: str | None) -> str:
    """The transformers Auto class that loads a segmentation architecture (DETR's panoptic
    heads, ``*DetrForSegmentation``, are loaded by their own class name)."""
    arch = architecture or ""
    if arch.endswith("ForSemanticSegmentation"):
        return SEMANTIC_HEAD
    if arch.endswith("ForInstanceSegmentation"):
        return "AutoModelForInstanceSegmentation"
    if arch.endswith("DetrForSegmentation"):
        return arch
    return "AutoModelForUniversalSegmentation"


def subtasks_of(model_class: str, processor: Any) -> tuple[str, ...]:
    """The subtasks a model does, its default first: what its processor can post-process."""
    candidates = ("semantic",) if model_class == SEMANTIC_HEAD else SUBTASK_ORDER
    return tuple(s for s in candidates if callable(getattr(processor, f"post_process_{s}_segmentation", None)))


@dataclass
class Segmenter:
    """A loaded segmentation model with its image processor."""

    model: Any
    processor: Any
    device: Any
    semantic_head: bool  # per-pixel logits (softmax); else a universal head's mask x class scores
    subtasks: tuple[str, ...] = field(default=())

    def subtask_of(self, request: SegmentImageRequest) -> str:
        why = UNSUPPORTED.get(str(getattr(self.model.config, "model_type", "")))
        if why is not None:
            raise UnsupportedTaskError(why)
        if not self.subtasks:
            raise UnsupportedTaskError("this model's image processor has no segmentation post-processing")
        if request.subtask is None:
            return self.subtasks[0]
        if request.subtask not in self.subtasks:
            raise UnsupportedTaskError(f"this model does not do {request.subtask} segmentation",
                                       f"it does: {', '.join(self.subtasks)}")
        return request.subtask

    def segment(self, request: SegmentImageRequest) -> list[list[Segment]]:
        """Segments per image, in the request's order."""
        import torch

        subtask = self.subtask_of(request)
        images = list(request.images)
        found: list[list[Segment]] = [[] for _ in images]
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                chunk = images[start:start + BATCH]
                for members, outputs in self._forward_groups(chunk):
                    sizes = [(chunk[i].height, chunk[i].width) for i in members]
                    for i, segments in zip(members, self._post_process(subtask, outputs, sizes, request),
                                           strict=True):
                        found[start + i] = segments
        return found

    def _forward_groups(self, images: Sequence[Any]) -> Iterator[tuple[list[int], Any]]:
        """(image indices, model outputs) per group of images whose inputs have the same shape."""
        from corral.engines.transformers.loading import same_shape_batches

        features = [self.processor([image], return_tensors="pt") for image in images]
        for members, batch in same_shape_batches(features, self.device, self.model.dtype):
            yield members, on_cpu(self.model(**batch))

    def _post_process(self, subtask: str, outputs: Any, sizes: list[tuple[int, int]],
                      request: SegmentImageRequest) -> list[list[Segment]]:
        names = self.model.config.id2label
        if subtask == "semantic":
            results = self.processor.post_process_semantic_segmentation(outputs, target_sizes=sizes,
                                                                        return_segmentation_scores=True)
            return [semantic_segments(r.segmentation, r.segmentation_scores, names, softmax=self.semantic_head)
                    for r in results]
        post_process = getattr(self.processor, f"post_process_{subtask}_segmentation")
        results = post_process(outputs, threshold=request.threshold, mask_threshold=request.mask_threshold,
                               overlap_mask_area_threshold=request.overlap_mask_area_threshold, target_sizes=sizes)
        return [query_segments(r["segmentation"], r["segments_info"], names) for r in results]


def on_cpu(outputs: Any) -> Any:
    """The model's outputs as float32 on the CPU, where the processors' post-processing makes its
    own tensors (Mask2Former's instance maps are CPU tensors indexed by the model's masks)."""
    import torch

    for key, value in list(outputs.items()):
        if isinstance(value, torch.Tensor):
            outputs[key] = value.float().cpu() if value.is_floating_point() else value.cpu()
    return outputs


def semantic_segments(winner: Any, scores: Any, names: dict[int, str], *, softmax: bool) -> list[Segment]:
    """One segment per label present in a semantic map, largest first; its score is the label's
    mean probability over its pixels (logits through softmax, or scores normalised to sum one)."""
    import torch

    winner = winner.cpu()
    scores = scores.float().cpu()
    probs = torch.softmax(scores, dim=0) if softmax else scores / scores.sum(dim=0).clamp_min(1e-12)
    present = sorted(set(winner.flatten().tolist()), key=lambda i: -int((winner == i).sum()))
    return [mask_segment(label_of(names, i), winner == i, float(probs[i][winner == i].mean())) for i in present]


def query_segments(segmentation: Any, infos: list[dict[str, Any]], names: dict[int, str]) -> list[Segment]:
    """Instance or panoptic segments from a post-processed map (one id per segment), best first;
    a segment whose pixels later segments all took has no mask and is left out."""
    segmentation = segmentation.cpu()
    found = []
    for info in infos:
        inside = segmentation == info["id"]
        if bool(inside.any()):
            found.append(mask_segment(label_of(names, int(info["label_id"])), inside, float(info["score"])))
    return sorted(found, key=lambda s: -s.score)


def label_of(names: dict[int, str], index: int) -> str:
    return names.get(index, f"LABEL_{index}")


def mask_segment(label: str, inside: Any, score: float) -> Segment:
    """A segment with its mask (a boolean tensor of the image's size) as a PNG: L mode, 0 / 255."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(inside.numpy().astype("uint8") * 255, mode="L").save(out, format="PNG")
    return Segment(label, score, out.getvalue())
