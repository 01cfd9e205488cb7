"""One diffusion run in a worker thread, its steps handed to the consumer as :class:`Progress` as
they finish; closing the consumer's generator stops the loop at the next step and joins the thread.

The pipeline reports each step through its public per-step callback: ``callback_on_step_end``
(``(pipeline, step, timestep, tensors) -> tensors``) where the pipeline has it, else the older
``callback(step, timestep, latents)`` with ``callback_steps=1`` (TextToVideoSDPipeline,
PixArt-Sigma). The callback raises once the consumer is gone: the exception leaves the pipeline's
loop at once (no VAE decode of a result nobody reads), where the pipeline's ``interrupt`` flag
would still run the remaining loop iterations and decode."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

from corral.errors import CorralError, UsageError
from corral.media_tasks import Progress

log = logging.getLogger("corral.engines.diffusers")


class GenerationFailed(CorralError):
    http_status = 500


class _Stopped(Exception):
    """Raised from the step callback when the consumer has stopped reading."""


class _Done:
    def __init__(self, output: Any = None, error: BaseException | None = None) -> None:
        self.output, self.error = output, error


def total_steps(pipeline: Any) -> int:
    """The steps of the run in progress: the pipeline's own count of its loop (``num_timesteps``),
    else the scheduler's timesteps per scheduler order (as its progress bar counts them)."""
    try:
        counted = int(pipeline.num_timesteps)
    except (AttributeError, TypeError, ValueError):
        counted = 0
    if counted > 0:
        return counted
    scheduler = getattr(pipeline, "scheduler", None)
    order = int(getattr(scheduler, "order", 1) or 1)
    timesteps = getattr(scheduler, "timesteps", None)
    return max(1, (len(timesteps) if timesteps is not None else 0) // order)


def step_hooks(pipeline: Any, params: frozenset[str], on_step: Callable[[int, int], None]) -> dict[str, Any]:
    """The keyword arguments that make ``pipeline`` call ``on_step(step, steps)`` after each step."""
    if "callback_on_step_end" in params:
        def on_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(index + 1, total_steps(pipe))
            return tensors
        return {"callback_on_step_end": on_end}
    if "callback" in params and "callback_steps" in params:
        def legacy(index: int, timestep: Any, latents: Any) -> None:
            on_step(index + 1, total_steps(pipeline))
        return {"callback": legacy, "callback_steps": 1}
    return {}


def run_steps(pipeline: Any, params: frozenset[str], kwargs: dict[str, Any],
              label: str) -> Generator[Progress, None, tuple[Any, int]]:
    """``pipeline(**kwargs)`` in a worker thread: its steps as Progress, then (as the generator's
    return value) its output and the steps it ran. ``label`` names the run in the debug log line of
    each step."""
    import torch

    cancel = threading.Event()
    out: queue.Queue[Progress | _Done] = queue.Queue()

    def on_step(step: int, steps: int) -> None:
        if cancel.is_set():
            raise _Stopped
        log.debug("%s: step %d/%d", label, step, steps)
        out.put(Progress(step, steps))

    def work() -> None:
        try:
            with torch.inference_mode():
                result = pipeline(**kwargs, **step_hooks(pipeline, params, on_step))
            out.put(_Done(result))
        except BaseException as exc:  # surfaced to the consumer below
            out.put(_Done(error=exc))

    worker = threading.Thread(target=work, name="corral-diffusion", daemon=True)
    worker.start()
    ran = 0
    try:
        while not isinstance(item := out.get(), _Done):
            ran += 1
            yield item
    finally:
        cancel.set()
        worker.join()
    if item.error is not None:
        raise _failure(item.error)
    return item.output, ran


def _failure(exc: BaseException) -> BaseException:
    if isinstance(exc, CorralError):
        return exc
    if isinstance(exc, ValueError):  # the pipeline's own input checks (check_inputs)
        return UsageError(f"the pipeline refused the request: {exc}")
    return GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")
