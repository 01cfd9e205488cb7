"""Cross-encoders through sentence-transformers' ``CrossEncoder``: rerank with the model's own activation.

A folder saved by ``CrossEncoder.save_pretrained`` declares the function that turns its logits
into scores (``activation_fn``: sigmoid, tanh, identity for raw logits, ...); ``CrossEncoder.predict``
applies it, so a pair scores here exactly as sentence-transformers scores it (the transformers
classifier handler always takes the sigmoid). An activation outside ``torch`` is the model's own
code: sentence-transformers imports it only with ``--trust-remote-code`` (otherwise it falls back to
its default), and the weights load from safetensors unless ``--allow-pickle``. All pairs of a call,
which the runtime's batcher has merged from concurrent requests, go through one ``predict``.
"""

from __future__ import annotations

from typing import Any

from corral.engines.resident import touch_weights
from corral.engines.sentence.common import SentenceHandler
from corral.models.safety import safetensors_rule
from corral.tasks import RerankRequest, RerankResult, Usage

BATCH = 32  # pairs per forward pass inside one predict


class CrossEncoderHandler(SentenceHandler):
    library_class = "CrossEncoder"

    def load(self) -> None:
        self.model = self.open_model(use_safetensors=safetensors_rule(self.options.trust))
        self.model.eval()
        touch_weights(self.model)  # mapped weights count at load (see resident.py)
        self.max_length = _max_length(self.model)

    def rerank(self, request: RerankRequest) -> RerankResult:
        import torch

        pairs = [[query, document] for query, document in request.pairs]
        scores = self.model.predict(pairs, batch_size=BATCH, convert_to_tensor=True, show_progress_bar=False)
        scores = scores.float().cpu()
        if scores.ndim > 1:  # several labels per pair: the last label's probability, as the classifier handler
            scores = torch.softmax(scores, dim=-1)[:, -1]
        features = self.model.tokenizer([q for q, _ in request.pairs], [d for _, d in request.pairs],
                                        truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in features["input_ids"]]
        return RerankResult([float(s) for s in scores.tolist()], Usage(prompt_tokens=sum(lengths)), lengths)


def _max_length(model: Any) -> int | None:
    """The tokens a pair may have: ``max_seq_length`` (sentence-transformers 6), else ``max_length`` (4, 5)."""
    value = getattr(model, "max_seq_length", None) or getattr(model, "max_length", None)
    return value if isinstance(value, int) and value > 0 else None
