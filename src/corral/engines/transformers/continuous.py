"""Continuous batching for transformers causal LMs: the library's own manager, fed and drained
per request.

transformers (>= 5) ships a continuous-batching manager (``model.init_continuous_batching``) that
schedules many sequences over a paged KV cache in one background thread. corral keeps it greedy
and does each request's sampling and logprobs itself, through one per-request logits processor
(:class:`SlotSampling`): a row of the batch carries its request's slot number, the slot's
:class:`~corral.engines.transformers.sampling.RequestSampler` draws from that row with the request's own
generator, and argmax then takes the drawn token. Seeds therefore mean the same thing in a batch
as alone.

Only the manager's public surface is used: ``init_continuous_batching`` with a
``ContinuousBatchingConfig``, ``warmup``/``start``/``stop``/``is_running``, ``add_request`` with
per-request ``logit_processor_kwargs``, ``get_result``, ``cancel_request``, the documented
``ContinuousBatchingLogitsProcessor`` base class, and the manager's ``logit_processor`` list
(replaced before the start). :func:`unsupported_reason` checks that surface before anything
starts; where it is missing the model serves one request at a time, with a logged warning.
``start`` is called from a short-lived daemon thread inside ``inference_mode``: the library's
generation thread inherits both (a non-daemon thread would keep a process that exits without
unloading alive).

A router thread moves the manager's outputs to one queue per request; a consumer that stops
reading (client gone, stop sequence) cancels its request so its cache pages are freed. When the
generation thread dies, every request in flight fails at once with :class:`BatchFailed` and
:meth:`ContinuousBatcher.alive` turns false, so the handler restarts the batcher.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import logging
import math
import queue
import threading
from collections.abc import Generator
from typing import Any

from corral.engines.transformers.sampling import RequestSampler, steer
from corral.errors import CorralError
from corral.tasks import Sampling

log = logging.getLogger("corral.engines")

PAGE_SIZE = 64  # tokens per KV page
TOKENS_PER_SEQUENCE = 2048  # cache sized so this many sequences of this length fit at once
POLL_S = 0.25


class BatchFailed(CorralError):
    """The batching thread stopped under a request; the model's next request restarts it."""

    http_status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, "retry the request: the next one restarts batching for this model")


CONFIG_FIELDS = ("page_size", "num_blocks", "max_batch_tokens", "max_requests_per_batch", "use_async_batching",
                 "use_cuda_graph", "allow_block_sharing")
MANAGER_METHODS = ("warmup", "start", "stop", "is_running", "add_request", "get_result", "cancel_request")


def unsupported_reason(model: Any) -> str | None:
    """Why this transformers cannot batch this model the way corral drives it, or None when it can.

    Checks the public surface :class:`ContinuousBatcher` uses, before anything is started."""
    try:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        from transformers.generation.continuous_batching.cb_logits_processors import (
            ContinuousBatchingLogitsProcessor,
        )
    except ImportError as exc:
        return f"this transformers has no continuous-batching API ({exc})"
    init = getattr(model, "init_continuous_batching", None)
    if init is None or "continuous_batching_config" not in inspect.signature(init).parameters:
        return "init_continuous_batching(continuous_batching_config=...) is missing"
    fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    if missing := [name for name in CONFIG_FIELDS if name not in fields]:
        return f"ContinuousBatchingConfig lacks {', '.join(missing)}"
    abstract: frozenset[str] = getattr(ContinuousBatchingLogitsProcessor, "__abstractmethods__", frozenset())
    if abstract - {"fill_defaults", "prepare_tensor_args", "__call__"}:
        return f"ContinuousBatchingLogitsProcessor asks for {sorted(abstract)}"
    return None


def manager_unsupported_reason(manager: Any) -> str | None:
    """The manager-side half of :func:`unsupported_reason`, checked once the manager exists."""
    if missing := [name for name in MANAGER_METHODS if not callable(getattr(manager, name, None))]:
        return f"the manager lacks {', '.join(missing)}"
    if not hasattr(manager, "logit_processor"):
        return "the manager has no logit_processor list"
    kinds = {p.kind for p in inspect.signature(manager.add_request).parameters.values()}
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        return "add_request takes no per-request logits-processor arguments"
    return None


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
            # held while steering: a stream that ends pops its sampler under this lock, so once the pop
            # returns, no step still running records another token for that request
            with self.lock:
                for row, slot in enumerate(slots):
                    sampler = self.samplers.get(slot)
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
        self.model, self.attention = model, model.config._attn_implementation
        self.manager: Any = model.init_continuous_batching(generation_config=generation,
                                                           continuous_batching_config=config)
        if reason := manager_unsupported_reason(self.manager):
            raise BatchFailed(reason)
        self.sampling: Any = slot_processor_class()()
        processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([self.sampling]))
        processors.tensors_required = 1  # one int32 row of per-request arguments: the slot numbers
        self.manager.logit_processor = processors
        self.queues: dict[str, queue.Queue[Any]] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.stopping = threading.Event()
        self.failed = threading.Event()  # the thread reported a failure: replace this batcher
        logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)
        self.manager.warmup()  # allocates the paged cache here, so that a failure raises here
        self._start()
        self.router = threading.Thread(target=self._route, name="corral-cb-router", daemon=True)
        self.router.start()

    def _start(self) -> None:
        """``manager.start()`` from a daemon thread in inference mode: the generation thread it
        creates inherits both (threads take their daemon flag from their creator; the manager runs
        its loop in its caller's inference mode), so a process that exits without unloading the
        model does not wait for it, and decoding keeps no autograd bookkeeping."""
        import torch

        def start() -> None:
            with torch.inference_mode():
                self.manager.start()

        starter = threading.Thread(target=start, name="corral-cb-start", daemon=True)
        starter.start()
        starter.join()
        if not self.manager.is_running():
            raise BatchFailed("the batching thread did not start")

    def alive(self) -> bool:
        """True while the generation thread runs and has reported no failure; the handler replaces
        a batcher that is not alive."""
        return not (self.stopping.is_set() or self.failed.is_set()) and bool(self.manager.is_running())

    def _fail(self, message: str) -> BatchFailed:
        self.failed.set()
        log.error("continuous batching: %s", message)
        return BatchFailed(message)

    def _route(self) -> None:
        while not self.stopping.is_set():
            out = self.manager.get_result(timeout=POLL_S)
            if out is None:
                if not self.manager.is_running():
                    return  # stopped or died: nothing more will come (get_result would not wait)
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
            accepted = self.manager.add_request(input_ids, request_id=rid, max_new_tokens=max_new_tokens,
                                                streaming=True, corral_slot=n)
            if accepted is None:
                raise self._fail("the batching thread is not accepting requests")
            sent = 0
            while not finished:
                try:
                    out = inbox.get(timeout=POLL_S)
                except queue.Empty:
                    if not self.manager.is_running():
                        raise self._fail("the batching thread stopped") from None
                    continue
                if out.error:
                    raise self._fail(f"the batching thread failed: {out.error}")
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
        if self.manager.is_running():
            self.manager.stop(block=True, timeout=30)
        self.router.join(timeout=5)
        restore_attention(self.model, self.attention)  # stop() does it too, but not after the thread died


def start_batcher(model: Any, eos_ids: list[int], sequences: int, context: int) -> ContinuousBatcher | None:
    """A running batcher, or None (logged) when this model or transformers cannot batch continuously."""
    if reason := unsupported_reason(model):
        log.warning("continuous batching is not available with transformers as installed (%s); requests run "
                    "one at a time", reason)
        return None
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
        restore_attention(model, original)
        return None
    return batcher


def restore_attention(model: Any, original: str) -> None:
    """Put back the attention implementation the manager switched away from (to a paged one)."""
    if model.config._attn_implementation != original:
        model.set_attn_implementation(original)
