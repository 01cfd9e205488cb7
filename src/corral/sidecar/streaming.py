"""How the sidecar streams: every chunk of a generation sent as a ``stream/delta`` notification
(tagged with the request's id) and folded into the one final answer, which equals the answer the
same request gets unstreamed; a cancel is answered only once the generation has really stopped.
Used by chat and complete (OpenAI chunks, ``protocols.openai``) and by translate, summarize and
describe_image (``{"index", "text", "finish_reason"}`` chunks of a ``protocols.hf`` GenerationRun).
Long work without text (a diffusion run) reports each step as ``notifications/progress`` instead,
to the ``progressToken`` the request named (:func:`step_progress`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from corral.media_tasks import Progress
    from corral.protocols.hf.generation import GenerationRun
    from corral.sidecar.methods import Session


class Fold(Protocol):
    """Chunks folded back into the whole answer (ChatFold, CompletionFold, GenerationFold)."""

    def add(self, chunk: dict[str, Any]) -> None: ...

    def result(self) -> Any: ...


def timed(result: dict[str, Any], started: float, first: float | None) -> dict[str, Any]:
    """``result`` with ``timings``: ``ttft_ms`` (None unstreamed) and ``total_ms``."""
    now = time.perf_counter()
    return {**result, "timings": {"ttft_ms": None if first is None else round((first - started) * 1000, 3),
                                  "total_ms": round((now - started) * 1000, 3)}}


async def send_stream(session: Session, chunks: AsyncGenerator[dict[str, Any], None],
                      settle: Callable[[], Awaitable[None]], fold: Fold,
                      has_text: Callable[[dict[str, Any]], bool]) -> tuple[Any, float | None]:
    """Send each chunk as ``stream/delta`` and fold it: (the folded answer, when the first chunk
    with text came). A cancel closes ``chunks`` (which stops the generation) and is re-raised once
    ``settle`` saw it stop."""
    first = None
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if first is None and has_text(chunk):
                    first = time.perf_counter()
                fold.add(chunk)
                session.notify("stream/delta", {"requestId": session.request_id, "chunk": chunk})
    except asyncio.CancelledError:
        await settle()
        raise
    return fold.result(), first


async def stream_generation(session: Session, run: GenerationRun) -> Any:
    """A Hugging Face-shaped generation streamed: its chunks as deltas, then the task's own answer."""
    answer, _ = await send_stream(session, run.chunks(), run.settle, run.fold(), lambda c: bool(c["text"]))
    return answer


def step_progress(session: Session, token: int | str | None, what: str) -> Callable[[Progress], None] | None:
    """A callback sending each step as ``notifications/progress`` (``progress`` = the step,
    ``total`` = the steps) to ``token``; None when the request named no progress token."""
    if token is None:
        return None

    def report(step: Progress) -> None:
        session.notify("notifications/progress", {"progressToken": token, "progress": step.step,
                                                   "total": step.steps,
                                                   "message": f"{what}: step {step.step}/{step.steps}"})
    return report
