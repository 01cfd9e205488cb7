"""Continuous batching for GGUF models: many generation requests decoded together in one llama.cpp context.

:class:`BatchedDecoder` owns one model and one context whose KV cache holds ``max_sequences`` sequences
of up to ``n_ctx_per_seq`` tokens each. One background thread runs the decode loop: every step it builds
ONE ``llama_batch`` holding the next token of every generating sequence plus (chunked to ``n_batch``) the
prompt tokens of newly admitted sequences, calls ``llama_decode`` once, and samples each sequence from its
own output row with its own sampler chain. Requests beyond ``max_sequences`` wait in a FIFO for a slot.

The KV cache is per-sequence (``kv_unified = false``: one KV stream per slot, laid out exactly as a
single-sequence context lays out its cache). That is what keeps a sequence's logits bit-identical to
decoding it alone: with a unified cache a sequence's cells sit at cell indices that depend on its
neighbours, and the attention reductions over the cells (SIMD lanes by cell index) round differently.
llama.cpp splits a multi-stream batch into ubatches of equal token counts over *consecutive* sequence
ids, so the decoder keeps the busy slots contiguous (lowest free slot first; when a sequence ends, the
highest one is moved into the hole with ``llama_memory_seq_cp``): a decode-only step is one ubatch.

Flash attention is on by default because it makes a sequence's logits independent of how its tokens
are cut into ubatches (the CPU kernel walks one query row over its cells in order). Without it, ggml's
attention for a stream with a single query row rounds differently from the multi-row path, so a prompt
whose tail llama.cpp happens to put alone in a ubatch can differ from the same prompt decoded alone.
With ``flash_attn=True`` outputs equal ``llama_cpp.Llama(..., flash_attn=True)`` token for token.

Stop sequences are not handled here: callers apply them to the text (``StopMatcher``) and ``cancel()``.
"""

from __future__ import annotations

import codecs
import ctypes
import heapq
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from corral.devices import usable_cpus
from corral.engines.llama.sampling import SamplerChain, log_softmax, logits_row, top_logprobs
from corral.errors import ContextLengthError, CorralError
from corral.tasks import Sampling


class DecoderClosedError(CorralError):
    """The decoder was closed (or failed) before the sequence finished."""

    http_status = 503


@dataclass
class TokenPiece:
    # UTF-8 safe: the bytes of a character split across tokens are held back until it is complete (bytes
    # still incomplete when the sequence ends are dropped); invalid UTF-8 becomes U+FFFD
    text: str
    token: int  # the sampled token id
    logprob: float | None = None  # log-softmax of the chosen token over the raw logits
    top_logprobs: list[tuple[str, float]] | None = None  # the k most likely tokens, best first


_END = object()


class SequenceStream:
    """The pieces of one sequence, produced by the decode thread; iterate from any one thread."""

    def __init__(self, decoder: BatchedDecoder, prompt_tokens: int) -> None:
        self._decoder = decoder
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # unbounded: a slow reader never blocks
        self._cancel = threading.Event()
        self._drained = False
        self.error: BaseException | None = None
        self.finish_reason: str | None = None  # "stop" | "length" | "cancelled"
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0

    def __iter__(self) -> Iterator[TokenPiece]:
        while not self._drained:
            item = self._queue.get()
            if item is _END:
                self._drained = True
                break
            yield item
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Leave the batch at the next step (freeing the slot and its KV cells); no-op once finished."""
        self._cancel.set()
        self._decoder._wake()

    def _put(self, piece: TokenPiece) -> None:
        self._queue.put(piece)

    def _end(self, reason: str | None, error: BaseException | None = None) -> None:
        self.finish_reason, self.error = reason, error
        self._queue.put(_END)


@dataclass
class _Seq:
    stream: SequenceStream
    prompt: list[int]
    budget: int  # tokens it may generate: min(max_tokens, n_ctx_per_seq - len(prompt))
    sampler: SamplerChain
    logprobs: int | None
    slot: int = -1
    n_past: int = 0  # tokens already in the KV cache
    pending: int | None = None  # sampled token not yet decoded

    def __post_init__(self) -> None:
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")


class BatchedDecoder:
    """Decode concurrent requests to one GGUF model together: one ``llama_decode`` per step for all."""

    def __init__(self, model_path: str, *, n_ctx_per_seq: int, max_sequences: int = 8, n_threads: int | None = None,
                 n_gpu_layers: int = 0, n_batch: int = 512, flash_attn: bool = True) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaContext, LlamaModel
        from llama_cpp._logger import set_verbose

        if max_sequences < 1 or n_ctx_per_seq < 2 or n_batch < max_sequences:
            raise ValueError("need max_sequences >= 1, n_ctx_per_seq >= 2 and n_batch >= max_sequences")
        if max_sequences > llama_cpp.llama_max_parallel_sequences():
            raise ValueError(f"llama.cpp supports at most {llama_cpp.llama_max_parallel_sequences()} sequences")
        self._ll: Any = llama_cpp
        set_verbose(False)  # llama.cpp's log goes through llama-cpp-python's callback: errors only
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        model: Any = LlamaModel(path_model=str(model_path), params=mparams, verbose=True)
        self._model = model
        threads = n_threads or usable_cpus()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = max_sequences * -(-n_ctx_per_seq // 256) * 256  # llama.cpp pads each stream to 256
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = max_sequences
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.kv_unified = False  # one KV stream per slot; see the module docstring
        # flash attention: see the module docstring (without it, results depend on how prompts are chunked)
        cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                   else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        cparams.no_perf = True
        try:
            context: Any = LlamaContext(model=model, params=cparams, verbose=True)
        except Exception:
            model.close()
            raise
        self._ctx = context
        per_seq = int(llama_cpp.llama_n_ctx_seq(context.ctx))
        if per_seq < n_ctx_per_seq:
            context.close()
            model.close()
            raise ValueError(f"llama.cpp gave each sequence {per_seq} KV cells, fewer than n_ctx_per_seq")
        self._batch: Any = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.n_ctx_per_seq, self.max_sequences, self.n_batch = n_ctx_per_seq, max_sequences, n_batch
        self.n_vocab = int(self._model.n_vocab())
        self.add_bos = bool(self._model.add_bos_token())
        self.bos_token, self.eos_token = int(self._model.token_bos()), int(self._model.token_eos())
        self.steps = 0  # llama_decode calls made (one per step)
        self._cond = threading.Condition()
        self._waiting: deque[_Seq] = deque()
        self._active: dict[int, _Seq] = {}
        self._free = list(range(max_sequences))  # a heap: the lowest free slot is handed out first
        self._closed = self._released = False
        self._thread = threading.Thread(target=self._run, name="corral-llama-batch", daemon=True)
        self._thread.start()

    # --- vocabulary -------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_bos, True))

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._model.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._model.vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def detokenize_piece(self, token: int, *, special: bool = False) -> str:
        """One token's text on its own (invalid or partial UTF-8 replaced)."""
        return self.token_bytes(token, special=special).decode("utf-8", errors="replace")

    def metadata(self) -> dict[str, str]:
        return dict(self._model.metadata())

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._model.vocab, token))

    # --- requests ---------------------------------------------------------------------------------

    def submit(self, prompt_tokens: list[int], sampling: Sampling, *, max_tokens: int,
               grammar: str | None = None, logprobs: int | None = None) -> SequenceStream:
        """Queue one generation; thread-safe. Raises ContextLengthError if the prompt leaves no room."""
        prompt = [int(t) for t in prompt_tokens]
        if not prompt:
            raise ValueError("the prompt has no tokens")
        if len(prompt) >= self.n_ctx_per_seq:
            raise ContextLengthError(
                f"the prompt is {len(prompt)} tokens but a sequence's context holds {self.n_ctx_per_seq}",
                "shorten the prompt or conversation")
        if any(t < 0 or t >= self.n_vocab for t in prompt):
            raise ValueError(f"prompt token ids must lie in [0, {self.n_vocab})")
        if logprobs is not None and logprobs < 0:
            raise ValueError("logprobs must be >= 0")
        stream = SequenceStream(self, len(prompt))
        budget = min(max(0, max_tokens), self.n_ctx_per_seq - len(prompt))
        sampler = SamplerChain(self._model.vocab, sampling, grammar)  # raises on a bad grammar
        with self._cond:
            if self._closed:
                sampler.close()
                raise DecoderClosedError("the batched decoder is closed")
            if budget == 0:
                sampler.close()
                stream._end("length")
            else:
                self._waiting.append(_Seq(stream, prompt, budget, sampler, logprobs))
                self._cond.notify()
        return stream

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Stop the decode thread, end unfinished streams with DecoderClosedError, free llama.cpp state."""
        with self._cond:
            if self._released:
                return
            self._closed = self._released = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._fail_all("the batched decoder was closed before the sequence finished")
        if self._batch is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()
        self._model.close()

    def __enter__(self) -> BatchedDecoder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- decode thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._active and not self._waiting:
                        self._cond.wait()  # idle: block, never spin
                    if self._closed:
                        return
                    self._schedule()
                    seqs = sorted(self._active.values(), key=lambda s: s.slot)
                if seqs:
                    self._step(seqs)
        except BaseException as exc:  # never leave readers blocked on a dead loop
            with self._cond:
                self._closed = True
            self._fail_all(f"the batched decoder failed: {exc!r}", exc)

    def _schedule(self) -> None:
        """Under the lock: drop cancelled sequences, then admit waiting ones into free slots (FIFO)."""
        for seq in [s for s in self._active.values() if s.stream._cancel.is_set()]:
            self._retire(seq, "cancelled")
        for seq in [s for s in self._waiting if s.stream._cancel.is_set()]:
            self._waiting.remove(seq)
            seq.sampler.close()
            seq.stream._end("cancelled")
        while self._waiting and self._free:
            seq = self._waiting.popleft()
            seq.slot = heapq.heappop(self._free)
            self._active[seq.slot] = seq
        while self._free and self._active and self._free[0] < max(self._active):
            # close a hole: llama.cpp batches only consecutive sequence ids into one ubatch
            seq = self._active.pop(max(self._active))
            src, seq.slot = seq.slot, heapq.heapreplace(self._free, seq.slot)
            if seq.n_past:  # copies the whole KV stream (same cell layout) at the start of the next decode
                self._ll.llama_memory_seq_cp(self._ctx.memory, src, seq.slot, -1, -1)
                self._ll.llama_memory_seq_rm(self._ctx.memory, src, -1, -1)
            self._active[seq.slot] = seq

    def _retire(self, seq: _Seq, reason: str | None, error: BaseException | None = None) -> None:
        """Under the lock (or after the loop ended): free the slot, its KV cells and its sampler."""
        if self._active.pop(seq.slot, None) is not None:
            self._ll.llama_memory_seq_rm(self._ctx.memory, seq.slot, -1, -1)
            heapq.heappush(self._free, seq.slot)
        seq.sampler.close()
        seq.stream._end(reason, error)

    def _fail_all(self, message: str, cause: BaseException | None = None) -> None:
        def error() -> DecoderClosedError:  # one instance per stream: each reader raises its own
            exc = DecoderClosedError(message)
            exc.__cause__ = cause
            return exc

        with self._cond:
            for seq in list(self._active.values()):
                self._retire(seq, None, error())
            while self._waiting:
                seq = self._waiting.popleft()
                seq.sampler.close()
                seq.stream._end(None, error())

    def _step(self, seqs: list[_Seq]) -> None:
        batch = self._batch
        n = 0
        outputs: list[tuple[_Seq, int]] = []  # (sequence, batch row with logits)

        def add(token: int, pos: int, slot: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
            batch.seq_id[n][0], batch.logits[n] = slot, logits
            n += 1

        for seq in seqs:  # every generating sequence's next token: one row each
            if seq.pending is not None:
                outputs.append((seq, n))
                add(seq.pending, seq.n_past, seq.slot, True)
        fed: list[tuple[_Seq, int]] = []
        for seq in seqs:  # then prompt chunks (slot order), filling the rest of n_batch
            if seq.pending is None and n < self.n_batch:
                chunk = seq.prompt[seq.n_past: seq.n_past + self.n_batch - n]
                for i, token in enumerate(chunk):
                    last = seq.n_past + i == len(seq.prompt) - 1
                    if last:
                        outputs.append((seq, n))
                    add(token, seq.n_past + i, seq.slot, last)
                fed.append((seq, len(chunk)))
        batch.n_tokens = n
        rc = self._ll.llama_decode(self._ctx.ctx, batch)
        self.steps += 1
        if rc != 0:
            with self._cond:
                for seq in seqs:
                    self._retire(seq, None, DecoderClosedError(f"llama_decode failed (code {rc})"))
            return
        for seq, _ in outputs:
            if seq.pending is not None:
                seq.n_past += 1
        for seq, count in fed:
            seq.n_past += count
        finished: list[tuple[_Seq, str]] = []
        for seq, row in outputs:
            reason = self._sample(seq, row)
            if reason is not None:
                finished.append((seq, reason))
        if finished:
            with self._cond:
                for seq, reason in finished:
                    self._retire(seq, reason)

    def _sample(self, seq: _Seq, row: int) -> str | None:
        """Sample ``seq``'s next token from batch row ``row``; returns a finish reason when it ends."""
        logprob: float | None = None
        alternatives: list[tuple[str, float]] | None = None
        if seq.logprobs is not None:  # read raw logits before the sampler chain modifies its copy
            lp = log_softmax(logits_row(self._ctx.ctx, row, self.n_vocab))
        token = seq.sampler.sample(self._ctx.ctx, row)
        if self.is_eog(token):  # not counted, not emitted; bytes of an unfinished character are dropped
            seq.pending = None
            return "stop"
        if seq.logprobs is not None:
            logprob = float(lp[token])
            alternatives = [(self.detokenize_piece(t), v) for t, v in top_logprobs(lp, seq.logprobs)]
        seq.stream.completion_tokens += 1
        last = seq.stream.completion_tokens >= seq.budget
        text = seq.utf8.decode(self.token_bytes(token))  # holds an incomplete character's bytes back
        seq.stream._put(TokenPiece(text, token, logprob, alternatives))
        seq.pending = None if last else token
        return "length" if last else None
