"""Text-to-image and text-to-video through any diffusers pipeline class ``model_index.json``
names that the installed diffusers has: ``DiffusionPipeline.from_pretrained`` of the folder only
(safetensors unless --allow-pickle; custom pipelines and components only with
--trust-remote-code), on the chosen device in half precision on CUDA. A request's images are seeded
one generator each (seed, seed + 1, ...), so the same request makes the same images; its steps
stream as Progress and closing the stream stops the loop at the next step (steps.py). Usage:
``prompt_tokens`` the prompt's tokens where the pipeline has a tokenizer, ``completion_tokens``
the diffusion steps run."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

from corral.devices import pick_torch_device
from corral.engines.base import Handler
from corral.engines.diffusers import pipes
from corral.engines.diffusers.steps import run_steps
from corral.engines.resident import touch_weights
from corral.engines.table import EngineSpec
from corral.errors import UnsafeModelError, UnsupportedTaskError, UsageError
from corral.media_tasks import (
    GenerateImageRequest,
    GenerateImageResult,
    GenerateVideoRequest,
    GenerateVideoResult,
    Progress,
)
from corral.models.inspect import DIFFUSERS_LIBRARIES
from corral.models.safety import safetensors_rule
from corral.task_types import Usage

SEED_RANGE = 2**31  # a seed drawn for a request that gave none


class DiffusersHandler(Handler):
    engine = "diffusers"

    pipeline: Any = None
    params: frozenset[str] = frozenset()

    @classmethod
    def import_libraries(cls, spec: EngineSpec | None = None) -> None:
        """Also diffusers' pipeline and modeling core: a first load's measurement would otherwise
        count them as the model's."""
        super().import_libraries(spec)
        import transformers.modeling_utils  # noqa: F401

        import diffusers

        diffusers.DiffusionPipeline  # noqa: B018  (diffusers imports lazily)
        diffusers.ModelMixin  # noqa: B018

    def load(self) -> None:
        import diffusers
        import diffusers.utils.logging as diffusers_logging
        from corral.engines.quiet import quiet_hf

        quiet_hf()
        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
        self._check_classes(diffusers)
        self.device = pick_torch_device(self.options.device)
        trust = self.options.trust
        pipeline = diffusers.DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            str(self.path), use_safetensors=safetensors_rule(trust), local_files_only=True,
            trust_remote_code=trust.trust_remote_code,
            dtype=pipes.load_dtype(self.options.dtype, self.device, self.info.dtype))
        pipeline.to(self.device)
        pipeline.set_progress_bar_config(disable=True)
        params = pipes.call_params(pipeline)
        if "prompt" not in params:
            raise UnsupportedTaskError(f"{type(pipeline).__name__} takes no text prompt",
                                       "corral runs text-to-image and text-to-video pipelines")
        for component in pipeline.components.values():
            if hasattr(component, "parameters") and hasattr(component, "buffers"):
                touch_weights(component)  # mapped weights count at load (see resident.py)
        self.pipeline, self.params = pipeline, params

    def _check_classes(self, diffusers: Any) -> None:
        """The pipeline class is one of the installed diffusers', its components come from diffusers
        or transformers, unless the user trusts the model's own code."""
        if self.options.trust.trust_remote_code:
            return
        index = json.loads((self.path / "model_index.json").read_text())
        name = index.get("_class_name")
        if not isinstance(name, str) or not hasattr(diffusers, name):
            raise UnsupportedTaskError(
                f"the installed diffusers ({diffusers.__version__}) has no pipeline {name!r}",
                "upgrade diffusers; a custom pipeline's code runs only with --trust-remote-code")
        for part, value in index.items():
            if part.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
                continue
            library = value[0]
            if library not in DIFFUSERS_LIBRARIES:
                raise UnsafeModelError(f"the pipeline's {part} comes from {library!r}, code outside diffusers and "
                                       "transformers, which corral does not run by default; refused",
                                       "read that code first; if you trust it, pass --trust-remote-code")

    def unload(self) -> None:
        self.pipeline = None

    def _prompt_tokens(self, prompt: str) -> int:
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        if tokenizer is None:
            return 0
        limit = int(getattr(tokenizer, "model_max_length", 0) or 0) or None
        return len(tokenizer(prompt, truncation=limit is not None, max_length=limit).input_ids)

    def _arguments(self, request: GenerateImageRequest | GenerateVideoRequest,
                   count: int) -> tuple[dict[str, Any], int]:
        """The pipeline's keyword arguments for ``request`` (sizes checked), and the seed used."""
        import torch

        pipes.check_size(self.pipeline, request.width, request.height)
        if request.negative_prompt and "negative_prompt" not in self.params:
            raise UsageError(f"{type(self.pipeline).__name__} takes no negative prompt", "leave it out")
        seed = request.seed if request.seed is not None else secrets.randbelow(SEED_RANGE)
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(count)]
        wanted = {"prompt": request.prompt, "negative_prompt": request.negative_prompt, "height": request.height,
                  "width": request.width, "num_inference_steps": request.steps, "guidance_scale": request.guidance,
                  "generator": generators if count > 1 else generators[0]}
        return {k: v for k, v in wanted.items() if v is not None and k in self.params}, seed

    def generate_image(self, request: GenerateImageRequest) -> Iterator[Progress | GenerateImageResult]:
        kwargs, seed = self._arguments(request, request.n)
        for name in ("num_images_per_prompt", "num_videos_per_prompt"):
            if name in self.params:
                kwargs[name] = request.n
                break
        else:
            if request.n > 1:
                raise UsageError(f"{type(self.pipeline).__name__} makes one image per request", "ask for n = 1")
        if "output_type" in self.params:
            kwargs["output_type"] = "pil"
        output, ran = yield from run_steps(self.pipeline, self.params, kwargs, f"generate_image {self.path.name}")
        images = tuple(image.convert("RGB") for image in output.images)
        yield GenerateImageResult(images, seed, Usage(self._prompt_tokens(request.prompt), ran))

    def generate_video(self, request: GenerateVideoRequest) -> Iterator[Progress | GenerateVideoResult]:
        kwargs, seed = self._arguments(request, 1)
        if request.frames is not None:
            if "num_frames" not in self.params:
                raise UsageError(f"{type(self.pipeline).__name__} takes no frame count", "leave frames out")
            kwargs["num_frames"] = request.frames
        if "output_type" in self.params:
            kwargs["output_type"] = "np"
        output, ran = yield from run_steps(self.pipeline, self.params, kwargs, f"generate_video {self.path.name}")
        frames = tuple(pipes.frames_of(output.frames))
        yield GenerateVideoResult(frames, request.fps, seed, Usage(self._prompt_tokens(request.prompt), ran))
