"""Embedding models through sentence-transformers: normalised vectors, batched input."""

from __future__ import annotations

from typing import Any

from corral.devices import pick_torch_device, torch_dtype
from corral.engines.base import Handler
from corral.engines.resident import touch_weights
from corral.engines.table import EngineSpec
from corral.tasks import EmbedRequest, EmbedResult, Usage


class SentenceTransformersHandler(Handler):
    engine = "sentence_transformers"

    model: Any = None

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        """Also transformers' modeling core, which is otherwise imported by the first load (and measured with it)."""
        super().import_libraries(spec)
        import transformers.modeling_utils  # noqa: F401
        from sentence_transformers import SentenceTransformer  # noqa: F401

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        from corral.engines.quiet import quiet_hf

        quiet_hf()
        self.device = pick_torch_device(self.options.device)
        self.model = SentenceTransformer(
            str(self.path), device=self.device, local_files_only=True,
            trust_remote_code=self.options.trust.trust_remote_code,
            model_kwargs={"dtype": torch_dtype(self.options.dtype, self.device, self.info.dtype)})
        touch_weights(self.model)  # mapped weights count at load (see resident.py)

    def unload(self) -> None:
        self.model = None

    def embed(self, request: EmbedRequest) -> EmbedResult:
        texts = list(request.inputs)
        vectors = self.model.encode(texts, normalize_embeddings=request.normalize,
                                    convert_to_numpy=True, batch_size=32)
        tokens = self.model.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length)
        lengths = [len(ids) for ids in tokens["input_ids"]]
        return EmbedResult(list(vectors), Usage(prompt_tokens=sum(lengths)), input_tokens=lengths)
