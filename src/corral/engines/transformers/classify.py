"""Hugging Face sequence classifiers through transformers: rerank (the relevance of each (query,
document) pair). A one-label head is a relevance scorer: its score is the sigmoid of the logit
(as sentence-transformers' CrossEncoder scores such models); with two or more labels the score is
the probability of the last one (``relevant`` in the usual label order). One forward pass per
call, in batches of ``BATCH`` pairs; the runtime merges concurrent requests into one call."""

from __future__ import annotations

from typing import Any

from corral.devices import pick_torch_device, torch_dtype
from corral.engines.base import Handler
from corral.engines.resident import touch_weights
from corral.engines.table import EngineSpec
from corral.tasks import RerankRequest, RerankResult, Usage

BATCH = 32


class SequenceClassifierHandler(Handler):
    engine = "transformers"

    model: Any = None
    tokenizer: Any = None

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        super().import_libraries(spec)
        import transformers.modeling_utils  # noqa: F401
        from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

    def load(self) -> None:
        from corral.engines.quiet import quiet_hf
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        quiet_hf()
        self.device = pick_torch_device(self.options.device)
        trust = self.options.trust
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(self.path), trust_remote_code=trust.trust_remote_code, use_safetensors=not trust.allow_pickle,
            dtype=torch_dtype(self.options.dtype, self.device, self.info.dtype))
        self.model.to(self.device)
        self.model.eval()
        touch_weights(self.model)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), trust_remote_code=trust.trust_remote_code)
        self.max_length = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512),
                              int(getattr(self.model.config, "max_position_embeddings", 512) or 512))

    def unload(self) -> None:
        self.model = self.tokenizer = None

    def rerank(self, request: RerankRequest) -> RerankResult:
        import torch

        scores: list[float] = []
        lengths: list[int] = []
        pairs = list(request.pairs)
        for start in range(0, len(pairs), BATCH):
            chunk = pairs[start:start + BATCH]
            features = self.tokenizer([q for q, _ in chunk], [d for _, d in chunk], padding=True,
                                      truncation=True, max_length=self.max_length, return_tensors="pt")
            lengths += [int(n) for n in features["attention_mask"].sum(dim=1)]
            with torch.inference_mode():
                logits = self.model(**features.to(self.device)).logits.float()
            if logits.shape[-1] == 1:
                scores += torch.sigmoid(logits[:, 0]).tolist()
            else:
                scores += torch.softmax(logits, dim=-1)[:, -1].tolist()
        return RerankResult(scores, Usage(prompt_tokens=sum(lengths)), lengths)
