"""Continuous batching for transformers causal LMs: the library's own manager, fed and drained
per request.

transformers (>= 5) ships a continuous-batching manager (``model.init_continuous_batching``) that
schedules many sequences over a paged KV cache in one background thread. corral keeps it greedy
and does each request's sampling and logprobs itself, through one per-request logits processor
(:class:`SlotSampling`): a row of the batch carries its request's slot number, the slot's
:class:`~corral.engines.torch_sampling.RequestSampler` draws from that row with the request's own
generator, and argmax then takes the drawn token. Seeds therefore mean the same thing in a batch
as alone.

A router thread moves the manager's outputs to one queue per request; a consumer that stops
reading (client gone, stop sequence) cancels its request so its cache pages are freed.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
from collections.abc import Generator
from typing import Any

from corral.engines.torch_sampling import RequestSampler, steer
from corral.errors import CorralError
from corral.tasks import Sampling

log = logging.getLogger("corral.engines")

PAGE_SIZE = 64  # tokens per KV page
TOKENS_PER_SEQUENCE = 2048  # cache sized so this many sequences of this length fit at once
POLL_S = 0.25


class BatchFailed(CorralError):
    http_status = 500


def slot_processor_class() -> type:
    """The per-request logits processor, built on demand so importing corral never imports torch."""
    import torch
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessor,
    )

    class SlotSampling(ContinuousBatchingLogitsProcessor):  # type: ignore[misc]
        supported_kwargs: dict[str, type] = {"corral_slot": int}  # noqa: RUF012 (the library's own contract)
        ignored_kwargs: tuple[str, ...] = ()

        def __init__(self) -> None:
            self.samplers: dict[int, RequestSampler] = {}
            self.lock = threading.Lock()
            self.widest = 0  # the most sequences that got a token from one forward pass

        def fill_defaults(self, int32_tensor: Any) -> None:
            int32_tensor.fill_(-1)

        def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> Any:
            slots = [r.state.logit_processor_kwargs.get("corral_slot", -1) for r in requests_with_new_token]
            return torch.tensor(slots, dtype=torch.int32)

        def __call__(self, scores: Any, tensor_arg: Any) -> Any:
            slots = tensor_arg[: scores.size(0)].tolist()
            self.widest = max(self.widest, len(slots))
            with self.lock:
                samplers = [self.samplers.get(s) for s in slots]
            for row, sampler in enumerate(samplers):
                if sampler is not None and not sampler.passive:
                    steer(scores[row], sampler)
            return scores

    return SlotSampling


class ContinuousBatcher:
    """One model's continuous-batching manager plus the routing of its outputs to requests."""

    def __init__(self, model: Any, eos_ids: list[int], max_sequences: int, context: int) -> None:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        from transformers.generation.continuous_batching.cb_logits_processors import (
            ContinuousBatchingLogitsProcessorList,
        )
        from transformers.generation.logits_process import LogitsProcessorList

        per_sequence = min(context, TOKENS_PER_SEQUENCE)
        blocks = max_sequences * math.ceil(per_sequence / PAGE_SIZE)
        self.capacity = blocks * PAGE_SIZE  # tokens the paged cache holds, all sequences together
        config = ContinuousBatchingConfig(
            page_size=PAGE_SIZE,
            num_blocks=blocks,
            max_batch_tokens=max(256, max_sequences * 4),
            max_requests_per_batch=max_sequences,
            use_async_batching=False,  # keeps one logits row per scheduled token: slots stay aligned
            use_cuda_graph=False,
            allow_block_sharing=False,
        )
        generation = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False, eos_token_id=eos_ids, max_new_tokens=per_sequence)
        self.eos_ids = eos_ids
        self.manager: Any = model.init_continuous_batching(generation_config=generation,
                                                           continuous_batching_config=config)
        self.sampling: Any = slot_processor_class()()
        processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([self.sampling]))
        processors.tensors_required = 1  # one int32 row of per-request arguments: the slot numbers
        self.manager.logit_processor = processors
        self.queues: dict[str, queue.Queue[Any]] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.stopping = threading.Event()
        logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)
        self.manager.warmup()  # allocates the paged cache here, so that a failure raises here
        self._start_daemon()
        self.router = threading.Thread(target=self._route, name="corral-cb-router", daemon=True)
        self.router.start()

    def _start_daemon(self) -> None:
        """``manager.start()``, but on a daemon thread: the library's own thread is not one, and a
        process that exits without unloading the model would wait for it forever."""
        manager = self.manager
        loop = getattr(manager, "_run_generation_loop", None)
        if loop is None or not hasattr(manager, "_generation_thread"):
            manager.start()
            return
        manager.background_thread_status.clear()

        def run() -> None:
            import torch

            with torch.inference_mode():  # lighter than the loop's own no_grad: no autograd bookkeeping
                loop()

        manager._generation_thread = threading.Thread(target=run, name="corral-cb-loop", daemon=True)
        manager._generation_thread.start()

    def _route(self) -> None:
        while not self.stopping.is_set():
            out = self.manager.get_result(timeout=POLL_S)
            if out is None:
                continue
            with self.lock:
                target = self.queues.get(out.request_id)
            if target is not None:
                target.put(out)

    def stream(self, input_ids: list[int], max_new_tokens: int,
               sampler: RequestSampler) -> Generator[int, None, None]:
        """Generated token ids of one request, as the batch produces them (end-of-sequence included)."""
        n = next(self.ids)
        rid, inbox = f"corral-{n}", queue.Queue[Any]()
        with self.lock:
            self.queues[rid] = inbox
        with self.sampling.lock:
            self.sampling.samplers[n] = sampler
        finished = False
        try:
            self.manager.add_request(input_ids, request_id=rid, max_new_tokens=max_new_tokens,
                                     streaming=True, corral_slot=n)
            sent = 0
            while not finished:
                try:
                    out = inbox.get(timeout=POLL_S)
                except queue.Empty:
                    if not self.manager.is_running():
                        raise BatchFailed("the batching thread stopped; reload the model") from None
                    continue
                if out.error:
                    raise BatchFailed(f"generation failed: {out.error}")
                finished = out.is_finished()
                tokens = out.generated_tokens
                yield from tokens[sent:]
                sent = len(tokens)
        finally:
            if not finished:
                self.manager.cancel_request(rid)
            with self.lock:
                self.queues.pop(rid, None)
            with self.sampling.lock:
                self.sampling.samplers.pop(n, None)

    def smoke_test(self) -> None:
        """Generate one token, so that a model whose attention cannot run paged fails at load."""
        greedy = RequestSampler(Sampling(max_tokens=1, temperature=0.0), None)
        if not list(self.stream([self.eos_ids[0] if self.eos_ids else 0], 1, greedy)):
            raise BatchFailed("continuous batching produced no token")

    def close(self) -> None:
        self.stopping.set()
        self.manager.stop(block=True, timeout=30)
        self.router.join(timeout=5)


def start_batcher(model: Any, eos_ids: list[int], sequences: int, context: int) -> ContinuousBatcher | None:
    """A running batcher, or None (logged) when this model or transformers cannot batch continuously."""
    original = model.config._attn_implementation
    batcher: ContinuousBatcher | None = None
    try:
        batcher = ContinuousBatcher(model, eos_ids, sequences, context)
        batcher.smoke_test()
    except Exception as exc:  # any failure means: serve one request at a time instead
        log.warning("continuous batching is not available for this model (%s: %s); requests run one at a time",
                    type(exc).__name__, exc)
        if batcher is not None:
            batcher.close()
        if model.config._attn_implementation != original:
            model.set_attn_implementation(original)
        return None
    return batcher
