"""One sequence through ``model.generate`` in a worker thread, its new token ids handed to the
consumer as they come; closing the consumer's generator stops generation (a StoppingCriteria sees
a cancel flag) and joins the thread. Shared by the causal-LM and the seq2seq handlers."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any

from corral.engines.detokenize import IncrementalDetokenizer
from corral.errors import CorralError


class GenerationFailed(CorralError):
    http_status = 500


class TokenStreamer:
    """The streamer ``generate`` feeds: the prompt first (skipped; for an encoder-decoder model the
    decoder's start token), then each new token."""

    def __init__(self, out: queue.Queue[int | None]) -> None:
        self.out = out
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.out.put(int(token))

    def end(self) -> None:
        """``generate`` is done; the worker thread signals the end itself."""


def stream_generate(model: Any, inputs: dict[str, Any], config: Any, processors: Any) -> Generator[int, None, None]:
    """``model.generate(**inputs, generation_config=config, logits_processor=processors)``'s new tokens."""
    import torch

    from transformers import StoppingCriteria, StoppingCriteriaList

    cancel = threading.Event()
    out: queue.Queue[int | None] = queue.Queue()

    class Cancelled(StoppingCriteria):
        def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=ids.device)

    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                model.generate(**inputs, generation_config=config, logits_processor=processors,
                               streamer=TokenStreamer(out), stopping_criteria=StoppingCriteriaList([Cancelled()]))
        except BaseException as exc:  # surfaced to the consumer below
            errors.append(exc)
        finally:
            out.put(None)

    worker = threading.Thread(target=work, name="corral-generate", daemon=True)
    worker.start()
    try:
        while (token := out.get()) is not None:
            yield token
    finally:
        cancel.set()
        worker.join()
    if errors:
        raise GenerationFailed(f"generation failed: {type(errors[0]).__name__}: {errors[0]}")


def text_pieces(tokenizer: Any, eos_ids: list[int], tokens: Generator[int, None, None],
                counted: list[int]) -> Iterator[str]:
    """Token ids to text pieces up to an end-of-sequence token; ``counted[0]`` tracks the tokens
    generated. Closing the pieces closes ``tokens`` (which stops generation)."""
    detok = IncrementalDetokenizer(tokenizer)
    try:
        for token in tokens:
            if token in eos_ids:
                break
            counted[0] += 1
            if text := detok.push(token):
                yield text
    finally:
        tokens.close()
    if rest := detok.flush():
        yield rest
