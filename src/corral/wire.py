"""Results in the shapes clients read, built once for every door that prints them.

Collecting a stream of chunks into one answer (and priming one), the usage object and the embedding list are the
same whether the HTTP door answers a request, the CLI prints ``--json`` or the sidecar replies;
they are written here and nowhere else, as is ``loads``, the parse of JSON that clients and models write
(bounded depth: a clean JSONDecodeError). Transport-free: no FastAPI, no argparse.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from corral.errors import ParameterError
from corral.tasks import EmbedResult, TextChunk, TokenLogprob, Usage

T = TypeVar("T")


@dataclass(frozen=True)
class Binary:
    """An answer that is a file's bytes (generated audio, an image, a video), not JSON: a door sends it as the
    body with its media type."""

    data: bytes
    media_type: str


def usage_json(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


@dataclass
class Collected:
    """One generation, folded from its chunks: text, the final usage and finish reason, logprobs."""

    parts: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, chunk: TextChunk) -> None:
        if chunk.text:
            self.parts.append(chunk.text)
        self.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason:
            self.usage, self.finish_reason = chunk.usage or Usage(), chunk.finish_reason


def collect(chunks: Iterable[TextChunk]) -> Collected:
    out = Collected()
    for chunk in chunks:
        out.add(chunk)
    return out


async def acollect(chunks: AsyncIterator[TextChunk]) -> Collected:
    out = Collected()
    async for chunk in chunks:
        out.add(chunk)
    return out


async def primed(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Pull the first item now, so that errors before it (unknown model, full queue) reach the
    caller before it answers anything."""
    first = await anext(stream)

    async def rest() -> AsyncIterator[T]:
        try:
            yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    return rest()


def embedding_vectors(result: EmbedResult, dimensions: int | None = None, model: str = "this model") -> Any:
    """The vectors as one float32 matrix; cut to ``dimensions`` and renormalised when asked."""
    import numpy as np

    from corral.errors import UsageError

    vectors = np.asarray(np.stack([np.asarray(v, dtype=np.float32) for v in result.vectors]), dtype=np.float32)
    if dimensions is not None:
        if dimensions > vectors.shape[1]:
            raise UsageError(f"dimensions must be at most {vectors.shape[1]} for {model}")
        vectors = vectors[:, :dimensions]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def embedding_list(result: EmbedResult, model: str, *, dimensions: int | None = None,
                   encoding_format: str = "float") -> dict[str, Any]:
    """OpenAI's embedding list. Rows stay numpy arrays (orjson writes them without per-float
    objects); base64 rows are little-endian float32."""
    vectors = embedding_vectors(result, dimensions, model)
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if encoding_format == "base64"
             else v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens}}


def loads(data: str | bytes) -> Any:
    """JSON a client or a model wrote (a request body, a tool call's arguments). Nesting deeper than the
    decoder's limit is malformed JSON like any other (``json.JSONDecodeError``), never a RecursionError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise json.JSONDecodeError("the JSON is nested too deeply", "", 0) from None


_SURROGATE = re.compile("[\ud800-\udfff]")  # what json.loads leaves of a "\\udXXX" escape that is no pair


def check_text(value: Any) -> None:
    """Refuse parsed JSON holding a lone surrogate (JSON can spell one, UTF-8 cannot, so no model, log
    or answer could carry it) with a 400 naming the field, before anything reads it. Walks without
    recursion: the value may be nested as deep as the parser allows."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        texts: Iterable[str] = ()
        if isinstance(item, str):
            texts = (item,)
        elif isinstance(item, dict):
            texts = (k for k in item if isinstance(k, str))
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
        for text in texts:
            if found := _SURROGATE.search(text):
                raise ParameterError(where or "body", f"{where or 'the body'} holds a lone UTF-16 surrogate "
                                     f"(\\u{ord(found.group()):04x}), which is not text",
                                     "send valid Unicode: a surrogate belongs only in a pair that spells one character")


def dumps(payload: Any, *, indent: bool = False) -> bytes:
    """JSON bytes for results holding numpy rows."""
    import orjson

    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0))
