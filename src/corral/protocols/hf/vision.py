"""Image tasks in the Hugging Face Inference API's shapes: image classification (``[{label,
score}]``, best first), object detection (``[{label, score, box: {xmin, ymin, xmax, ymax}}]`` in
pixels of the image), image segmentation (``[{label, score, mask}]``, the mask a base64 PNG of the
image's size; ``subtask`` semantic / instance / panoptic and the task's thresholds) and
image-to-text (``[{generated_text}]``). ``inputs`` is the image: raw bytes (a body that is only the
image), base64 text or a ``data:`` URL; a list of them gives a list of answers. Every image is
decoded and checked (``corral.media``) before any model is touched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.media import decode_image, media_bytes
from corral.tasks import (
    SEGMENT_SUBTASKS,
    ClassifyImageRequest,
    ClassifyImageResult,
    DescribeImageRequest,
    DetectObjectsRequest,
    DetectObjectsResult,
    SegmentImageRequest,
    SegmentImageResult,
    Task,
)

if TYPE_CHECKING:
    from corral.protocols.hf.generation import GenerationRun
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

MAX_IMAGES = 64
MAX_LABELS = 256


def images_of(inputs: Any, max_pixels: int) -> tuple[list[Any], bool]:
    """(decoded images, whether one was given)."""
    single = not isinstance(inputs, list)
    items = [inputs] if single else inputs
    if not items or len(items) > MAX_IMAGES:
        raise UsageError(f"inputs must be an image or a list of 1 to {MAX_IMAGES} images")
    return [decode_image(media_bytes(item), max_pixels=max_pixels) for item in items], single


def _number(parameters: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = parameters.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise UsageError(f"parameters.{name} must be a number from {low} to {high}")
    return float(value)


def candidate_labels(parameters: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    """(the labels, the caption template) of a zero-shot request; () when it names none."""
    labels = parameters.get("candidate_labels")
    if labels is None:
        return (), ""
    if isinstance(labels, str):
        labels = [x.strip() for x in labels.split(",") if x.strip()]
    if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS \
            or not all(isinstance(x, str) and x.strip() for x in labels):
        raise UsageError(f"parameters.candidate_labels must be a list of 1 to {MAX_LABELS} labels")
    template = parameters.get("hypothesis_template") or "This is a photo of {}."
    if not isinstance(template, str) or "{}" not in template:
        raise UsageError('parameters.hypothesis_template must be a string with "{}" where the label goes')
    return tuple(labels), template


async def image_classification(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                               call: CallInfo) -> Any:
    """The model's own labels, or (``candidate_labels``, an image-text model) the labels given."""
    images, single = images_of(inputs, runtime.settings.runtime.max_image_pixels)
    labels, template = candidate_labels(parameters)
    top_k = int(_number(parameters, "top_k", 1000 if labels else 5, 1, 1000))
    request = ClassifyImageRequest(tuple(images), labels, template) if labels else ClassifyImageRequest(tuple(images))
    result: ClassifyImageResult = await runtime.call(Task.CLASSIFY_IMAGE, model, request, call)
    out = [[{"label": label, "score": score} for label, score in scored[:top_k]] for scored in result.labels]
    return out[0] if single else out


async def zero_shot_image_classification(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                                         call: CallInfo) -> Any:
    if not candidate_labels(parameters)[0]:
        raise UsageError("zero-shot image classification needs parameters.candidate_labels: a list of labels")
    return await image_classification(runtime, model, inputs, parameters, call)


async def object_detection(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                           call: CallInfo) -> Any:
    images, single = images_of(inputs, runtime.settings.runtime.max_image_pixels)
    threshold = _number(parameters, "threshold", 0.5, 0.0, 1.0)
    result: DetectObjectsResult = await runtime.call(
        Task.DETECT_OBJECTS, model, DetectObjectsRequest(tuple(images), threshold), call)
    out = [[{"label": d.label, "score": d.score,
             "box": {"xmin": d.box[0], "ymin": d.box[1], "xmax": d.box[2], "ymax": d.box[3]}} for d in found]
           for found in result.detections]
    return out[0] if single else out


async def image_segmentation(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                             call: CallInfo) -> Any:
    import base64

    images, single = images_of(inputs, runtime.settings.runtime.max_image_pixels)
    result: SegmentImageResult = await runtime.call(Task.SEGMENT_IMAGE, model,
                                                    segment_request(images, parameters), call)
    out = [[{"label": seg.label, "score": seg.score, "mask": base64.b64encode(seg.mask).decode()} for seg in found]
           for found in result.segments]
    return out[0] if single else out


def segment_request(images: list[Any], parameters: dict[str, Any]) -> SegmentImageRequest:
    """The image-segmentation parameters: ``subtask`` (semantic, instance, panoptic; the model's
    own when left out), ``threshold`` (0.9), ``mask_threshold`` (0.5), ``overlap_mask_area_threshold`` (0.5)."""
    subtask = parameters.get("subtask")
    if subtask is not None and subtask not in SEGMENT_SUBTASKS:
        raise UsageError(f"parameters.subtask must be one of: {', '.join(SEGMENT_SUBTASKS)}")
    return SegmentImageRequest(tuple(images), subtask, _number(parameters, "threshold", 0.9, 0.0, 1.0),
                               _number(parameters, "mask_threshold", 0.5, 0.0, 1.0),
                               _number(parameters, "overlap_mask_area_threshold", 0.5, 0.0, 1.0))


def start_image_to_text(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                        call: CallInfo) -> GenerationRun:
    """``[{"generated_text": ...}]`` per image (a list of them for a list of images); greedy unless
    ``generate_parameters`` samples."""
    from corral.protocols.hf.generation import GenerationRun, sampling_of

    images, single = images_of(inputs, runtime.settings.runtime.max_image_pixels)
    sampling = sampling_of(parameters)

    def shape(done: list[str]) -> Any:
        out = [[{"generated_text": text}] for text in done]
        return out[0] if single else out

    return GenerationRun([runtime.run(Task.DESCRIBE_IMAGE, model, DescribeImageRequest(image, sampling=sampling), call)
                          for image in images], shape)


async def image_to_text(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                        call: CallInfo) -> Any:
    return await start_image_to_text(runtime, model, inputs, parameters, call).response()
