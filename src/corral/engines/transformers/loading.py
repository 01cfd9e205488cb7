"""The load every transformers task handler shares: the device, the weights through the model's
Auto class (trust and pickle gates, dtype, device, eval mode, resident weights), its tokenizer
and/or image processor. A handler names its Auto class and what it needs, and finishes its own
setup in :meth:`TorchTaskHandler.loaded`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from corral.devices import pick_torch_device, torch_dtype
from corral.engines.base import Handler
from corral.engines.resident import touch_weights
from corral.engines.table import EngineSpec
from corral.models.safety import safetensors_rule


class TorchTaskHandler(Handler):
    engine = "transformers"
    auto_class: ClassVar[str] = ""  # the transformers Auto class that loads the weights
    uses_tokenizer: ClassVar[bool] = True
    uses_image_processor: ClassVar[bool] = False

    model: Any = None
    tokenizer: Any = None
    processor: Any = None

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        """Also transformers' modeling core and the Auto class: a first load's measurement would
        otherwise count them as the model's."""
        super().import_libraries(spec)
        import transformers
        import transformers.modeling_utils

        getattr(transformers, cls.auto_class or "AutoModel")

    def model_class(self) -> str:
        """The Auto class for this model (a handler serving several kinds of head picks by task)."""
        return self.auto_class

    def load(self) -> None:
        import transformers

        trust = self.options.trust
        self.model, self.device = load_weights(self, getattr(transformers, self.model_class()))
        if self.uses_tokenizer:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.path),
                                                                        trust_remote_code=trust.trust_remote_code)
        if self.uses_image_processor:
            self.processor = transformers.AutoImageProcessor.from_pretrained(  # type: ignore[no-untyped-call]
                str(self.path), trust_remote_code=trust.trust_remote_code)
        self.loaded()

    def loaded(self) -> None:
        """What a handler sets up once the model, tokenizer and processor are in place."""

    def max_input_length(self) -> int:
        """Tokens an input may have: the tokenizer's and the model's limits, whichever is lower."""
        return min(int(getattr(self.tokenizer, "model_max_length", 512) or 512),
                   int(getattr(self.model.config, "max_position_embeddings", 512) or 512))

    def unload(self) -> None:
        self.model = self.tokenizer = self.processor = None


def load_weights(handler: Handler, auto_class: Any) -> tuple[Any, str]:
    """(the model of ``handler``'s folder through ``auto_class`` (trust and pickle gates, dtype) on its
    device in eval mode with its weights resident, the device)."""
    from corral.engines.quiet import quiet_hf

    quiet_hf()
    device = pick_torch_device(handler.options.device)
    trust = handler.options.trust
    model = auto_class.from_pretrained(
        str(handler.path), trust_remote_code=trust.trust_remote_code, use_safetensors=safetensors_rule(trust),
        dtype=torch_dtype(handler.options.dtype, device, handler.info.dtype))
    model.to(device)
    model.eval()
    touch_weights(model)  # mapped weights count at load (see resident.py)
    return model, device


def same_shape_batches(features: Sequence[Any], device: str, dtype: Any) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """(indices, one batch) per group of inputs whose features (one processor output per input) have
    the same shapes: inputs are never padded for one another, so a batched input gives the result it
    gives alone. Floating tensors move to ``dtype`` (the model's), all to ``device``."""
    import torch

    groups: dict[tuple[tuple[str, tuple[int, ...]], ...], list[int]] = {}
    for i, feature in enumerate(features):
        groups.setdefault(tuple((k, tuple(v.shape)) for k, v in feature.items() if hasattr(v, "shape")), []).append(i)
    for members in groups.values():
        batch: dict[str, Any] = {}
        for key, first in features[members[0]].items():
            if not hasattr(first, "shape"):
                continue
            value = torch.cat([features[i][key] for i in members])
            batch[key] = value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
        yield members, batch
