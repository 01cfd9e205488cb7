"""The load both sentence-transformers handlers share: the library class a handler names
(``SentenceTransformer`` or ``CrossEncoder``) from the model's folder, local files only, the device,
dtype and trust opt-in passed through; the libraries imported before a memory measurement."""

from __future__ import annotations

from typing import Any, ClassVar

from corral.devices import pick_torch_device, torch_dtype
from corral.engines.base import Handler
from corral.engines.table import EngineSpec


class SentenceHandler(Handler):
    engine = "sentence_transformers"
    library_class: ClassVar[str] = "SentenceTransformer"  # the sentence_transformers class that loads the folder

    model: Any = None

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        """Also transformers' modeling core, which is otherwise imported by the first load (and measured with it)."""
        super().import_libraries(spec)
        import sentence_transformers
        import transformers.modeling_utils  # noqa: F401

        getattr(sentence_transformers, cls.library_class)

    def open_model(self, **model_kwargs: Any) -> Any:
        """The folder through ``library_class`` on the chosen device; ``model_kwargs`` go to transformers."""
        import sentence_transformers

        from corral.engines.quiet import quiet_hf

        quiet_hf()
        self.device = pick_torch_device(self.options.device)
        return getattr(sentence_transformers, self.library_class)(
            str(self.path), device=self.device, local_files_only=True,
            trust_remote_code=self.options.trust.trust_remote_code,
            model_kwargs={"dtype": torch_dtype(self.options.dtype, self.device, self.info.dtype), **model_kwargs})

    def unload(self) -> None:
        self.model = None
