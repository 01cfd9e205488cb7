"""Embedding models through sentence-transformers: normalised vectors, batched input."""

from __future__ import annotations

from corral.engines.resident import touch_weights
from corral.engines.sentence.common import SentenceHandler
from corral.tasks import EmbedRequest, EmbedResult, Usage


class SentenceTransformersHandler(SentenceHandler):
    def load(self) -> None:
        self.model = self.open_model()
        touch_weights(self.model)  # mapped weights count at load (see resident.py)

    def embed(self, request: EmbedRequest) -> EmbedResult:
        texts = list(request.texts(self.path.name))
        vectors = self.model.encode(texts, normalize_embeddings=request.normalize,
                                    convert_to_numpy=True, batch_size=32)
        tokens = self.model.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length)
        lengths = [len(ids) for ids in tokens["input_ids"]]
        return EmbedResult(list(vectors), Usage(prompt_tokens=sum(lengths)), input_tokens=lengths)
