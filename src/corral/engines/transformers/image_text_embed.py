"""Image-text embedding models through transformers: CLIP, SigLIP and their kin (a model with
``get_text_features`` and ``get_image_features``, loaded through ``AutoModel``). ``embed`` takes texts
and images (:class:`~corral.tasks.EmbedImage`) and gives one vector each, in the order given, all in
one space of the projection's size, unit length unless asked otherwise.

Texts go through the tokenizer (truncated at the text tower's positions), images through the PIL
image processor (no torchvision); each kind in its own forward passes of at most ``BATCH`` inputs, so
an input merged with concurrent requests gets the vector it gets alone: every image is resized to the
processor's size, CLIP masks text padding, and SigLIP (trained on text padded to its full length, no
mask) always pads to the full length. Usage counts the texts' tokens; an image counts none.

Such a model classifies an image only against labels given with it (zero-shot: ``classify_image``
with ``labels``, the Hugging Face door's ``candidate_labels``); without labels it is a 400."""

from __future__ import annotations

from typing import Any

from corral.engines.transformers.loading import TorchTaskHandler
from corral.errors import UnsupportedTaskError
from corral.tasks import ClassifyImageRequest, ClassifyImageResult, EmbedImage, EmbedRequest, EmbedResult, Usage

BATCH = 32
PAD_TO_FULL_LENGTH = frozenset({"siglip", "siglip2"})  # text towers trained on max-length padding


class ImageTextEmbedHandler(TorchTaskHandler):
    auto_class = "AutoModel"
    uses_tokenizer = True
    uses_image_processor = True

    def max_input_length(self) -> int:
        """Tokens a text may have: the tokenizer's limit and the text tower's positions, the lower."""
        text_config = getattr(self.model.config, "text_config", None) or self.model.config
        positions = int(getattr(text_config, "max_position_embeddings", 0) or 0) or 512
        tokenizer_limit = int(getattr(self.tokenizer, "model_max_length", positions) or positions)
        return min(positions, tokenizer_limit)

    def embed(self, request: EmbedRequest) -> EmbedResult:
        import torch

        vectors: list[Any] = [None] * len(request.inputs)
        tokens = [0] * len(request.inputs)
        texts = [(i, x) for i, x in enumerate(request.inputs) if isinstance(x, str)]
        images = [(i, x.image) for i, x in enumerate(request.inputs) if isinstance(x, EmbedImage)]
        for start in range(0, len(texts), BATCH):
            part = texts[start:start + BATCH]
            rows, counts = self._texts([text for _, text in part])
            for (i, _), row, count in zip(part, rows, counts, strict=True):
                vectors[i], tokens[i] = row, count
        for start in range(0, len(images), BATCH):
            part = images[start:start + BATCH]
            for (i, _), row in zip(part, self._images([image for _, image in part]), strict=True):
                vectors[i] = row
        if request.normalize and vectors:
            stacked = torch.nn.functional.normalize(torch.stack(vectors), dim=-1)
            vectors = list(stacked)
        return EmbedResult([v.numpy() for v in vectors], Usage(prompt_tokens=sum(tokens)), input_tokens=tokens)

    def _texts(self, texts: list[str]) -> tuple[list[Any], list[int]]:
        """(one float32 CPU row per text, its token count)."""
        import torch

        limit = self.max_input_length()
        padding = "max_length" if self.info.model_type in PAD_TO_FULL_LENGTH else "longest"
        encoded = self.tokenizer(texts, padding=padding, truncation=True, max_length=limit, return_tensors="pt")
        mask = encoded.get("attention_mask")
        counts = ([int(n) for n in mask.sum(dim=-1)] if mask is not None
                  else [len(self.tokenizer(t, truncation=True, max_length=limit)["input_ids"]) for t in texts])
        with torch.inference_mode():
            out = self.model.get_text_features(**encoded.to(self.device))
        return list(_features(out)), counts

    def _images(self, images: list[Any]) -> list[Any]:
        """One float32 CPU row per image."""
        import torch

        features = self.processor(images, return_tensors="pt")
        dtype = self.model.dtype
        inputs = {k: (v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in features.items() if hasattr(v, "is_floating_point")}
        with torch.inference_mode():
            out = self.model.get_image_features(**inputs)
        return list(_features(out))

    def classify_image(self, request: ClassifyImageRequest) -> ClassifyImageResult:
        """Zero-shot: each image against a caption per label (``hypothesis_template``), scored as the
        model was trained to: a softmax over the labels (CLIP), or each label on its own through a
        sigmoid (SigLIP)."""
        import torch

        if not request.labels:
            raise UnsupportedTaskError(
                f"{self.path.name} ({self.info.model_type}) has no labels of its own: it classifies an image "
                "against candidate labels given with it", "pass the labels: parameters.candidate_labels, the "
                "sidecar's the same, or `corral run MODEL photo.jpg --labels cat,dog`")
        captions = [request.hypothesis_template.format(label) for label in request.labels]
        texts = torch.nn.functional.normalize(torch.stack(self._texts(captions)[0]), dim=-1)
        scores: list[list[tuple[str, float]]] = []
        for start in range(0, len(request.images), BATCH):
            images = torch.nn.functional.normalize(torch.stack(self._images(list(request.images[start:start + BATCH]))),
                                                   dim=-1)
            logits = images @ texts.T * self.model.logit_scale.detach().exp().float().cpu()
            bias = getattr(self.model, "logit_bias", None)
            probs = (torch.sigmoid(logits + bias.detach().float().cpu()) if bias is not None
                     else torch.softmax(logits, dim=-1))
            scores += [sorted(zip(request.labels, (float(p) for p in row), strict=True), key=lambda x: -x[1])
                       for row in probs]
        return ClassifyImageResult(scores)


def _features(out: Any) -> Any:
    """The projected vectors of a get_*_features answer (a tensor, or transformers 5's output object
    with them as ``pooler_output``), as float32 on the CPU."""
    tensor = out if hasattr(out, "float") else out.pooler_output
    return tensor.float().cpu()
