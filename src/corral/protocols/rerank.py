"""The rerank API that RAG clients speak (Cohere's, Jina's and vLLM's ``/v1/rerank`` shape), free of
any transport: a query and documents in; results ordered by relevance, each with the document's
index, its ``relevance_score`` and (unless ``return_documents`` is false) the document."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from corral.errors import UsageError
from corral.tasks import RerankRequest, RerankResult, Task

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

MAX_DOCUMENTS = 1000


class TextDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str


class RerankBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. Cohere's max_tokens_per_doc, accepted and ignored

    model: str
    query: str
    documents: list[str | TextDocument]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = True

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


def check_inputs(query: str, documents: Sequence[str]) -> None:
    if not query.strip():
        raise UsageError("query must be a non-empty string")
    if not documents:
        raise UsageError("documents must hold at least one document")
    if len(documents) > MAX_DOCUMENTS:
        raise UsageError(f"documents may hold at most {MAX_DOCUMENTS} documents", "split the list into several calls")
    empty = next((i for i, d in enumerate(documents) if not d.strip()), None)
    if empty is not None:
        raise UsageError(f"documents[{empty}] is empty")


def ranked(result: RerankResult, documents: Sequence[str], top_n: int | None = None,
           return_documents: bool = True) -> list[dict[str, Any]]:
    """Results best first (ties keep the documents' order), at most ``top_n``."""
    order = sorted(range(len(documents)), key=lambda i: -result.scores[i])[:top_n]
    return [{"index": i, "relevance_score": float(result.scores[i]),
             **({"document": {"text": documents[i]}} if return_documents else {})} for i in order]


def rerank_response(result: RerankResult, body: RerankBody) -> dict[str, Any]:
    tokens = result.usage.prompt_tokens
    return {"id": f"rerank-{uuid.uuid4().hex}", "model": body.model,
            "results": ranked(result, body.texts(), body.top_n, body.return_documents),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def create_rerank(runtime: Runtime, body: RerankBody, call: CallInfo) -> dict[str, Any]:
    documents = body.texts()
    check_inputs(body.query, documents)
    result: RerankResult = await runtime.call(Task.RERANK, body.model, RerankRequest.of(body.query, documents), call)
    return rerank_response(result, body)
