"""Pieces every text-generation engine shares: stop sequences over a token stream, and the
final chunk that carries finish reason and usage."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from corral.errors import ContextLengthError
from corral.tasks import TextChunk, TokenLogprob, Usage


def tokens_to_generate(n_prompt: int, context: int, max_tokens: int, limit: int | None = None) -> int:
    """How many tokens a prompt leaves room for, capped by max_tokens; a clear error when none.
    ``limit``: the request's own bound on prompt + output (Ollama's ``num_ctx``), within the model's."""
    context = context if limit is None else min(context, limit)
    room = context - n_prompt
    if room <= 0:
        raise ContextLengthError(f"the prompt is {n_prompt} tokens but the context holds {context}",
                                 "shorten the prompt or conversation")
    return min(max_tokens, room)


class StopMatcher:
    """Finds stop sequences in streamed text, holding back only what could start one."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text that is safe to emit now; sets ``stopped`` when a stop is found."""
        if not self.stops:
            return text
        buf = self.pending + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.pending, self.stopped = "", True
            return buf[:cut]
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def stream_with_stops(pieces: Iterable[str | TextChunk], stops: Iterable[str], prompt_tokens: int,
                      max_tokens: int, counted: list[int]) -> Iterator[TextChunk]:
    """Turn engine text pieces into chunks, applying stop sequences.

    ``counted[0]`` is updated by the engine with the number of tokens generated so far; the
    iterator over ``pieces`` is closed as soon as a stop sequence is seen (stopping the engine).
    ``pieces`` ends normally on end-of-generation or on reaching ``max_tokens``.
    """
    matcher = StopMatcher(stops)
    it = iter(pieces)
    held: list[TokenLogprob] = []  # logprobs of tokens whose text is held back, sent with the next text
    try:
        for piece in it:
            if isinstance(piece, TextChunk):
                held.extend(piece.logprobs)
                piece = piece.text
            out = matcher.feed(piece)
            if out:
                yield TextChunk(out, logprobs=tuple(held))
                held = []
            if matcher.stopped:
                break
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    if not matcher.stopped:
        rest = matcher.flush()
        if rest or held:
            yield TextChunk(rest, logprobs=tuple(held))
    reason = "length" if not matcher.stopped and counted[0] >= max_tokens else "stop"
    yield TextChunk("", finish_reason=reason, usage=Usage(prompt_tokens, counted[0]))
